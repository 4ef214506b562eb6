"""Qualcomm QNN execution provider (Hexagon HTP): what a static QDQ graph must look like
to run on the NPU rather than fall back to the CPU.

The rules follow onnxruntime's own ``quantization/execution_providers/qnn/quant_config.py``
(``get_qnn_qdq_config``), restated as edgeopt's typed plan:

- every op is quantized (an unquantized op leaves the NPU), except Cast;
- MatMul weights use the weight type, per output channel when the config asks for it:
  onnxruntime's QNN tests run A16 activations with per-channel INT8 MatMul weights on
  HTP (``MatMulOp_QDQ`` in ``test/providers/qnn/matmul_test.cpp``), although
  ``get_qnn_qdq_config`` still forces them per-tensor. Without per-channel, MatMul
  weights and LayerNormalization scales get explicit per-tensor weight types. 16-bit
  weights are not offered: the same tests disable A16W16 MatMul on HTP (wrong results);
- 16-bit Sigmoid and Tanh outputs use the fixed scales HTP's kernels assume;
- no calibrated range narrower than 1e-4 (HTP rejects near-zero scales);
- static input shapes (HTP compiles the graph for one shape).

:data:`HTP_CONFIG` is the configuration the ``qnn-int8`` target spells out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeopt.quant.plan import QdqPlan, TensorOverride
from edgeopt.recipe import StaticInt8Config

# What HTP runs well: A16W8 (16-bit activations keep transformer accuracy; 8-bit
# weights keep the size), every op quantized, one fixed input shape.
HTP_CONFIG = StaticInt8Config(
    calibration="minmax",
    per_channel=True,
    activation_type="uint16",
    activation_symmetric=False,
    weight_type="int8",
    weight_symmetric=True,
    op_types=(),
    activation_matmuls=True,
    quantize_outputs=True,
    fixed_batch=1,
    fixed_sequence=128,
    provider_rules="qnn",
)

_SKIP_OPS = {"Cast"}
_MIN_RANGE = 1e-4
# Output scale / zero point HTP expects for 16-bit Sigmoid and Tanh.
_FIXED_OUTPUTS = {
    ("Sigmoid", "uint16"): (1.0 / 65536.0, 0),
    ("Sigmoid", "int16"): (1.0 / 32768.0, 0),
    ("Tanh", "uint16"): (1.0 / 32768.0, 32768),
    ("Tanh", "int16"): (1.0 / 32768.0, 0),
}


def qdq_rules(model: Any, config: StaticInt8Config, plan: QdqPlan) -> QdqPlan:
    """``plan`` adjusted so the graph runs on QNN's HTP (``model``: the shape-inferred
    float onnx.ModelProto the plan was made for)."""
    inits = {t.name for t in model.graph.initializer}
    op_types = tuple(t for t in plan.op_types if t not in _SKIP_OPS)
    excluded = set(plan.exclude)
    overrides = dict(plan.overrides)
    weight = TensorOverride(config.weight_type, config.weight_symmetric)
    for node in model.graph.node:
        if node.op_type not in op_types or node.name in excluded:
            continue
        if node.op_type in ("MatMul", "LayerNormalization") and not config.per_channel:
            for name in node.input[1:2]:
                if name in inits:
                    overrides[name] = weight
        out_type = overrides.get(node.output[0], TensorOverride(config.activation_type)).quant_type
        fixed = _FIXED_OUTPUTS.get((node.op_type, out_type))
        if fixed is not None:
            overrides[node.output[0]] = TensorOverride(out_type, scale=fixed[0], zero_point=fixed[1])
    return dataclasses.replace(plan, op_types=op_types, overrides=overrides,
                               minimum_real_range=_MIN_RANGE)
