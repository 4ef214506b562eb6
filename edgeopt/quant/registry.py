"""Quantization: one registry from config type to quantizer, and the dispatch.

Each quantizer lives in its own module (``quant_dynamic``, ``quant_int4``,
``quant_static``) and registers itself here. A quantizer takes the artifact, its typed
config, a work folder, the pass record and a :class:`QuantContext` carrying real inputs
for those that look at activations.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.errors import RecipeError
from edgeopt.graph import op_counts
from edgeopt.quant.plan import PlanRules
from edgeopt.recipe import NoQuantConfig
from edgeopt.runtime import quiet_logging


@dataclass(frozen=True)
class QuantContext:
    """Real inputs for quantizers that calibrate (batches of graph feeds), and a folder
    where they may keep work worth reusing when the same graph is quantized again
    (calibration ranges, during an accuracy-budget search)."""

    calibration: tuple[dict[str, np.ndarray], ...] = field(default=())
    cache_dir: Path | None = None
    # An execution provider's rules for a static plan (edgeopt.providers), set by the
    # quantize stage from the config's ``provider_rules``; quantizers never look them up.
    plan_rules: PlanRules | None = None


@dataclass(frozen=True)
class Candidate:
    """Nodes an accuracy budget can keep in higher precision, as one unit (nodes that
    share a quantized input move together), with the float-graph tensors the unit reads
    (its activation inputs) and the ones whose error ranks it (its outputs)."""

    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    op: str


QuantizeFn = Callable[[OnnxArtifact, Any, Path, PassRecord, QuantContext], OnnxArtifact]
# The float ONNX model (onnx.ModelProto) and a config -> what a budget may keep.
CandidatesFn = Callable[[Any, Any], list[Candidate]]


@dataclass(frozen=True)
class Quantizer:
    run: QuantizeFn
    candidates: CandidatesFn | None = None


# Plain dict keyed by config type (torchao style); refuses duplicates. Each config type
# names the module that registers its quantizer (``quantizer``), imported on first use.
_QUANTIZERS: dict[type, Quantizer] = {}


def register_quantizer(config_type: type, candidates: CandidatesFn | None = None
                       ) -> Callable[[QuantizeFn], QuantizeFn]:
    """Register the quantizer for ``config_type``; ``candidates`` lists the nodes an
    accuracy budget may keep in higher precision (see ``config.with_kept``)."""
    def wrap(fn: QuantizeFn) -> QuantizeFn:
        if config_type in _QUANTIZERS:
            raise ValueError(f"a quantizer for {config_type.__name__} is already registered")
        _QUANTIZERS[config_type] = Quantizer(fn, candidates)
        return fn

    return wrap


def _lookup(config: Any) -> Quantizer:
    module = getattr(type(config), "quantizer", None)
    if module is not None:
        importlib.import_module(module)  # registers its quantizer on import
    entry = _QUANTIZERS.get(type(config))
    if entry is None:
        raise RecipeError(f"no quantizer registered for method {getattr(config, 'method', config)!r}")
    return entry


def supports_budget(config: Any) -> bool:
    """Whether an accuracy budget can keep nodes of ``config``'s quantizer in higher precision."""
    return _lookup(config).candidates is not None


def budget_candidates(model_path: Path, config: Any) -> list[Candidate]:
    """What an accuracy budget may keep in higher precision for ``config``, in graph order."""
    import onnx

    entry = _lookup(config)
    if entry.candidates is None:
        raise RecipeError(f"quantize.method {config.method!r} has nothing an accuracy budget can "
                          "keep in higher precision; use an INT8 target")
    return entry.candidates(onnx.load(str(model_path), load_external_data=False), config)


def quantize(artifact: OnnxArtifact, config: Any, workdir: Path, record: PassRecord,
             context: QuantContext | None = None) -> OnnxArtifact:
    """Run the quantizer registered for ``type(config)``."""
    fn = _lookup(config).run
    record.config = {"method": config.method, **asdict(config)}
    workdir.mkdir(parents=True, exist_ok=True)
    with quiet_logging(), warnings.catch_warnings():
        # The quantizers' numpy code warns on all-zero blocks; the result is still exact.
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(artifact, config, workdir, record, context or QuantContext())


@register_quantizer(NoQuantConfig)
def _keep_float(artifact: OnnxArtifact, config: NoQuantConfig, workdir: Path,
                record: PassRecord, context: QuantContext) -> OnnxArtifact:
    record.notes["quantized"] = "no (fp32)"
    return artifact


_QUANT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLinear",
              "QEmbedLayerNormalization", "MatMulNBits", "GatherBlockQuantized",
              "QuantizeLinear", "DequantizeLinear", "MatMul", "Gemm", "Gather")


def quantized_op_counts(path: Path) -> dict[str, int]:
    """Counts of the ops quantization adds or leaves, for the pass record."""
    counts = op_counts(path)
    return {op: counts[op] for op in _QUANT_OPS if counts.get(op)}
