"""The report of a compile, built from its stage records, parity result, benchmark and
the sections its stages added: nothing is measured again here."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from edgeopt.artifact import OnnxArtifact
from edgeopt.compiler.stage import StageContext
from edgeopt.providers.sizes import WeightSizes, weight_sizes
from edgeopt.report import Report
from edgeopt.source import SourceModel
from edgeopt.version import __version__

_VERSIONED = ("torch", "transformers", "onnx", "onnxruntime", "optimum", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of edgeopt and the libraries whose numbers the report depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"edgeopt": __version__}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_report(ctx: StageContext, final: OnnxArtifact) -> Report:
    """The report of the compile in ``ctx`` whose bundle model is ``final``."""
    req, parity = ctx.request, ctx.parity
    if parity is None or ctx.exported is None:
        raise RuntimeError("the report needs the validate and export (or load) stages first")
    sizes = {"source weights": req.src.weights_bytes(), "onnx fp32": ctx.exported.size_bytes,
             "bundle model.onnx": final.size_bytes, **ctx.sizes}
    return Report(
        status="PASSED" if parity.passed else "FAILED",
        target=req.target,
        task=req.src.task,
        source=source_info(req.src),
        recipe=req.recipe.to_dict(),
        passes=[asdict(r) for r in ctx.journal.records],
        parity=parity.to_dict(),
        bench=ctx.bench,
        sizes=sizes,
        versions=library_versions(),
        seconds=time.perf_counter() - ctx.started,
        failures=parity.failures,
        sections=[*ctx.sections, StoredWeights(weight_sizes(final.path))],
    )


@dataclass(frozen=True)
class StoredWeights:
    """The bundle model's stored bytes per op type and per layer (a report section)."""

    key: ClassVar[str] = "weights"
    title: ClassVar[str] = "Stored weights by op type and layer"
    sizes: WeightSizes

    def to_dict(self) -> dict[str, Any]:
        return self.sizes.to_dict()

    def to_markdown(self) -> str:
        lines = [f"{self.sizes.total_bytes / 1e6:.2f} MB of stored tensors in model.onnx.", "",
                 "| op type | MB |", "|---|---:|"]
        lines += [f"| {op} | {n / 1e6:.3f} |" for op, n in self.sizes.by_op_type]
        lines += ["", "| layer | MB |", "|---|---:|"]
        lines += [f"| {layer} | {n / 1e6:.3f} |" for layer, n in self.sizes.by_layer]
        return "\n".join(lines) + "\n"


def source_info(src: SourceModel) -> dict[str, Any]:
    """Where the model came from and its identity (weights sha256)."""
    return {"path": str(src.path), "architecture": src.architecture, "model_type": src.model_type,
            "library": src.library, "weights_sha256": src.weights_sha256(),
            "weight_files": [p.name for p in src.weight_files],
            # A LoRA adapter merged into this base: its path, sha256, r, alpha, targets.
            "adapter": src.adapter.describe() if src.adapter else None}
