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
from edgeopt.recipe import NoQuantConfig
from edgeopt.runtime import quiet_logging


@dataclass(frozen=True)
class QuantContext:
    """Real inputs for quantizers that calibrate (batches of graph feeds)."""

    calibration: tuple[dict[str, np.ndarray], ...] = field(default=())


QuantizeFn = Callable[[OnnxArtifact, Any, Path, PassRecord, QuantContext], OnnxArtifact]

# Plain dict keyed by config type (torchao style); refuses duplicates.
_QUANTIZERS: dict[type, QuantizeFn] = {}
_MODULES = ("edgeopt.passes.quant_dynamic", "edgeopt.passes.quant_int4")


def register_quantizer(config_type: type) -> Callable[[QuantizeFn], QuantizeFn]:
    def wrap(fn: QuantizeFn) -> QuantizeFn:
        if config_type in _QUANTIZERS:
            raise ValueError(f"a quantizer for {config_type.__name__} is already registered")
        _QUANTIZERS[config_type] = fn
        return fn

    return wrap


def quantize(artifact: OnnxArtifact, config: Any, workdir: Path, record: PassRecord,
             context: QuantContext | None = None) -> OnnxArtifact:
    """Run the quantizer registered for ``type(config)``."""
    for module in _MODULES:
        importlib.import_module(module)  # each registers its quantizers on import
    fn = _QUANTIZERS.get(type(config))
    if fn is None:
        raise RecipeError(f"no quantizer registered for method {getattr(config, 'method', config)!r}")
    record.config = {"method": config.method, **asdict(config)}
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
