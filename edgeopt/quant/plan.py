"""The plan a static (QDQ) quantizer follows, as plain data: which ops, which nodes stay
float, per-tensor overrides. The quantizer builds it from its config; an execution
provider's rules (:mod:`edgeopt.providers`) take it and return the plan that provider can
run. Both sides import these types; neither imports the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorOverride:
    """How one tensor is quantized when it differs from the defaults."""

    quant_type: str
    symmetric: bool | None = None
    # A fixed scale and zero point instead of the calibrated range (QNN's Sigmoid/Tanh).
    scale: float | None = None
    zero_point: int | None = None
    # A fixed real range instead of the calibrated one (additive attention masks).
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class QdqPlan:
    """What onnxruntime's QDQ quantizer is asked to do, in edgeopt's terms."""

    op_types: tuple[str, ...]
    exclude: tuple[str, ...]
    overrides: dict[str, TensorOverride] = field(default_factory=dict)
    # Quantize these op types' outputs too (a whole DQ -> op -> Q unit).
    output_op_types: tuple[str, ...] = ()
    # Smallest range a calibrated tensor may get (QNN rejects near-zero scales).
    minimum_real_range: float | None = None


# (shape-inferred float onnx.ModelProto, the static config, the plan) -> the plan to run.
PlanRules = Callable[[Any, Any, QdqPlan], QdqPlan]
