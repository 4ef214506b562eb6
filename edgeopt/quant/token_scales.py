"""Per-token activation scales for chosen dynamic INT8 MatMuls.

onnxruntime's DynamicQuantizeLinear gives a whole activation tensor one scale, so one
loud token (or one long sentence batched with short ones) coarsens every other row.
For the tensors named, this pass replaces it with a symmetric scale per row (token):

    DynamicQuantizeLinear(x) -> q, s, z          becomes
    s_t = max(ReduceMax(|x|, axis=-1), eps) / 127           (one scale per token)
    q   = QuantizeLinear(x / s_t, 1, 128)                   (uint8, zero point 128)
    y   = Cast(MatMulInteger(q, W, 128, zw)) * s_w * s_t    (s_w: the weight's per-column scale)

The GEMM is still onnxruntime's u8 x s8 MatMulInteger; what it costs is the few
elementwise passes that compute and apply the token scales. The result no longer depends
on which rows share a batch. onnxruntime fuses none of it at load (no DynamicQuantizeMatMul,
no MatMulIntegerToFloat: the Cast and both Muls stay), so the per-token scale is never
read as a per-tensor one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ONE, _ZERO_POINT, _INV127, _EPS, _AXES = ("token_scale_one", "token_scale_zero_point",
                                            "token_scale_inv127", "token_scale_eps", "token_scale_axes")


def scale_per_token(model: Any, tensors: set[str]) -> int:
    """Rewrite ``model`` (a dynamically quantized onnx.ModelProto) in place: every
    DynamicQuantizeLinear of a tensor in ``tensors`` takes per-token scales. Returns
    how many were rewritten; a quantization laid out otherwise is left as it is."""
    from onnx import helper

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {t.name for t in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    before: dict[str, list[Any]] = {}  # DynamicQuantizeLinear output -> nodes in its place
    after: dict[str, Any] = {}  # output-scale Mul output -> the per-token Mul after it
    gone: set[str] = set()
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in tensors:
            continue
        plan = _layout(node, consumers, inits)
        if plan is None:
            continue
        q, s, z = node.output
        x, tag = node.input[0], f"{q}_per_token"
        token_scale = f"{tag}_scale"
        # Opset 18 moved ReduceMax's axes from an attribute to an input.
        axes = {"inputs": [f"{tag}_abs", _AXES]} if opset >= 18 else {"inputs": [f"{tag}_abs"], "axes": [-1]}
        before[q] = [
            helper.make_node("Abs", [x], [f"{tag}_abs"], name=f"{tag}_abs"),
            helper.make_node("ReduceMax", outputs=[f"{tag}_max"], keepdims=1, name=f"{tag}_reduce", **axes),
            helper.make_node("Max", [f"{tag}_max", _EPS], [f"{tag}_max_safe"], name=f"{tag}_floor"),
            helper.make_node("Mul", [f"{tag}_max_safe", _INV127], [token_scale], name=f"{tag}_scale"),
            helper.make_node("Div", [x, token_scale], [f"{tag}_scaled"], name=f"{tag}_div"),
            helper.make_node("QuantizeLinear", [f"{tag}_scaled", _ONE, _ZERO_POINT], [q],
                             name=f"{tag}_quantize"),
        ]
        gone.add(q)
        for matmul in consumers[q]:
            matmul.input[2] = _ZERO_POINT
        for scales_mul, weight_scale in plan:
            gone.add(scales_mul.output[0])
            for out_mul in consumers[scales_mul.output[0]]:
                y = out_mul.output[0]
                slot = list(out_mul.input).index(scales_mul.output[0])
                out_mul.input[slot] = weight_scale
                out_mul.output[0] = f"{y}_per_column"
                after[f"{y}_per_column"] = helper.make_node(
                    "Mul", [f"{y}_per_column", token_scale], [y], name=f"{out_mul.name}_per_token")
    if not before:
        return 0
    nodes = []
    for node in graph.node:
        if node.output and node.output[0] in gone:
            nodes += before.get(node.output[0], [])
            continue
        nodes.append(node)
        if node.output and node.output[0] in after:
            nodes.append(after[node.output[0]])
    del graph.node[:]
    graph.node.extend(nodes)
    _add_constants(graph, opset)
    return len(before)


def _layout(node: Any, consumers: dict[str, list[Any]], inits: set[str]) -> list[tuple[Any, str]] | None:
    """For onnxruntime's dynamic MatMul layout (q and z read only by MatMulInteger; s
    read only by a Mul with the constant weight scale, whose product only scales the
    cast GEMM output), the (scale Mul, weight scale) pairs; None for anything else."""
    q, s, z = node.output
    matmuls = consumers.get(q, [])
    if not matmuls or any(m.op_type != "MatMulInteger" or len(m.input) < 3 or m.input[2] != z
                          for m in matmuls):
        return None
    if any(c.op_type != "MatMulInteger" for c in consumers.get(z, [])):
        return None
    plan = []
    for scales_mul in consumers.get(s, []):
        others = [i for i in scales_mul.input if i != s]
        if scales_mul.op_type != "Mul" or len(others) != 1 or others[0] not in inits:
            return None
        if any(c.op_type != "Mul" for c in consumers.get(scales_mul.output[0], [])):
            return None
        plan.append((scales_mul, others[0]))
    return plan or None


def _add_constants(graph: Any, opset: int) -> None:
    from onnx import numpy_helper

    have = {t.name for t in graph.initializer}
    constants = {_ONE: np.array(1.0, np.float32), _ZERO_POINT: np.array(128, np.uint8),
                 _INV127: np.array(1.0 / 127.0, np.float32), _EPS: np.array(1e-12, np.float32)}
    if opset >= 18:
        constants[_AXES] = np.array([-1], np.int64)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items() if k not in have)
