"""Mobile packaging: the bundle's graph in onnxruntime's ORT format, and the operator
config a reduced onnxruntime build is compiled from.

Both come from onnxruntime's own tool (``onnxruntime.tools.convert_onnx_models_to_ort``):
the graph is optimized once at conversion (level "all", the "Fixed" style, for ARM, so no
x86-only layouts are baked in) and saved as flatbuffers that onnxruntime's minimal build
loads without the ONNX parser. An ``.ort`` file is tied to the onnxruntime version that
wrote it (newer runtimes read older files, not the reverse): the manifest records it.
The converted graph must give the outputs of ``model.onnx`` or the compile fails.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ParityError

ORT_MODEL = "model.ort"
OPERATORS_CONFIG = "required_operators_and_types.config"
# What the conversion bakes in: Fixed-style optimizations at level "all" for ARM CPUs.
TARGET_PLATFORM = "arm"
OPTIMIZATION = "Fixed, level all"


@dataclass(frozen=True)
class OrtPackage:
    """The converted files (in a work folder) and how they were checked."""

    model: Path
    operators_config: Path
    onnxruntime_version: str
    max_abs_diff: float
    rows: int

    def manifest_entry(self) -> dict[str, Any]:
        return {"model": ORT_MODEL, "operators_config": OPERATORS_CONFIG,
                "onnxruntime_version": self.onnxruntime_version,
                "target_platform": TARGET_PLATFORM, "optimization": OPTIMIZATION,
                "note": "an .ort file loads in the onnxruntime version above or newer only",
                "max_abs_diff_vs_onnx": self.max_abs_diff}


def convert(model: Path, workdir: Path) -> tuple[Path, Path]:
    """``model`` as ``model.ort`` plus its operator-and-type config, under ``workdir``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    src = workdir / "ort-src"
    out = workdir / "ort-out"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, src / "model.onnx")
    # The tool prints its progress on stdout; keep stdout for edgeopt's own output (--json).
    with contextlib.redirect_stdout(sys.stderr):
        convert_onnx_models_to_ort(src / "model.onnx", output_dir=out,
                                   optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform=TARGET_PLATFORM, enable_type_reduction=True)
    configs = sorted(out.glob("*.config"))
    if not (out / ORT_MODEL).is_file() or len(configs) != 1:
        raise RuntimeError(f"onnxruntime's converter left {sorted(p.name for p in out.iterdir())} "
                           f"in {out}, not {ORT_MODEL} and one .config")
    config = out / OPERATORS_CONFIG
    # The tool lists the absolute path of the model it read; a shipped file names its own.
    lines = configs[0].read_text(encoding="utf-8").splitlines()
    config.write_text("\n".join(f"# - {ORT_MODEL}" if line.startswith("# - ") else line
                                for line in lines) + "\n", encoding="utf-8")
    return out / ORT_MODEL, config


def max_abs_diff(onnx_model: Path, ort_model: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """Largest difference of any output between the two graphs on ``feeds`` (CPU EP)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), sess_options=options,
                                     providers=["CPUExecutionProvider"])
                for p in (onnx_model, ort_model)]
    names = {i.name for i in sessions[0].get_inputs()}
    worst = 0.0
    for feed in feeds:
        feed = {k: v for k, v in feed.items() if k in names}
        a, b = (s.run(None, feed) for s in sessions)
        for x, y in zip(a, b, strict=True):
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)),
                                            initial=0.0)))
    return worst


def package(model: Path, workdir: Path, feeds: list[dict[str, np.ndarray]], atol: float
            ) -> OrtPackage:
    """Convert ``model`` and check the ``.ort`` against it; ParityError past ``atol``."""
    import onnxruntime as ort

    ort_model, config = convert(model, workdir)
    diff = max_abs_diff(model, ort_model, feeds)
    rows = sum(len(next(iter(f.values()))) for f in feeds)
    if not diff <= atol:
        raise ParityError([f"model.ort differs from model.onnx by {diff:.3g} (> {atol:g}) on "
                           f"{rows} rows"])
    return OrtPackage(ort_model, config, ort.__version__, diff, rows)
