"""The report of a compile, built from its stage records, parity result, benchmark and
the sections its stages added: nothing is measured again here."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from edgeopt.artifact import OnnxArtifact
from edgeopt.compiler.stage import StageContext
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
        sections=list(ctx.sections),
    )


def source_info(src: SourceModel) -> dict[str, Any]:
    """Where the model came from and its identity (weights sha256)."""
    return {"path": str(src.path), "architecture": src.architecture, "model_type": src.model_type,
            "library": src.library, "weights_sha256": src.weights_sha256(),
            "weight_files": [p.name for p in src.weight_files],
            # A LoRA adapter merged into this base: its path, sha256, r, alpha, targets.
            "adapter": src.adapter.describe() if src.adapter else None}
