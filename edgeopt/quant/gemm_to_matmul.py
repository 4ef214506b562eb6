"""Rewrite Gemm with a constant weight as MatMul (+ Add), so weight-only quantizers see it.

onnxruntime's MatMulNBits quantizer only rewrites MatMul; exporters emit Gemm for
GPT-2's Conv1D and for 2-D Linear layers (BERT pooler, classifier heads). Without this
those projections would silently stay fp32.

    A --Gemm(B, C, transB=1)--> Y      becomes      A --MatMul(B^T)--> t --Add(C)--> Y
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.graph import node_attrs, read_counts


def gemm_to_matmul(model: Any) -> int:
    """Rewrite eligible Gemm nodes of ``model`` (an onnx.ModelProto) in place; returns how many.

    Eligible: alpha = beta = 1, transA = 0, B an initializer. The caller owns ``model``
    (a fresh copy loaded for this pass), so editing it does not touch any input artifact.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers = read_counts(model.graph)
    new_nodes = []
    rewritten = 0
    for node in model.graph.node:
        attrs = node_attrs(node)
        eligible = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
        )
        if not eligible:
            new_nodes.append(node)
            continue
        weight_name = node.input[1]
        weight = numpy_helper.to_array(inits[weight_name])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
            if consumers.get(weight_name, 0) == 1:
                inits[weight_name].CopyFrom(numpy_helper.from_array(weight, weight_name))
            else:
                # Shared weight (tied): add a transposed copy rather than change other users.
                weight_name = f"{weight_name}_T"
                if weight_name not in inits:
                    inits[weight_name] = numpy_helper.from_array(weight, weight_name)
                    model.graph.initializer.append(inits[weight_name])
        has_bias = len(node.input) > 2 and node.input[2] != ""
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [mm_out],
                                          name=f"{node.name}_MatMul" if node.name else ""))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]],
                                              name=f"{node.name}_Add" if node.name else ""))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        used = {name for n in model.graph.node for name in n.input}
        kept = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        onnx.checker.check_model(model)
    return rewritten
