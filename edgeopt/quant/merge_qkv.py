"""Merge the Q, K and V MatMuls in front of each MultiHeadAttention into one.

With ``optimize.separate_qkv`` the fused graph keeps three MatMuls that read the same
LayerNorm output. As three, dynamic INT8 quantizes that tensor three times and splits
its outlier channels three times; as one MatMul of three times the width followed by a
Split, the input is quantized once (which is what makes a per-token scale affordable,
see ``token_scales``) and the GEMM is one wide product instead of three narrow ones:

    X --MatMul(Wq)--+                      X --MatMul([Wq|Wk|Wv])--Split--+-- q
    X --MatMul(Wk)--+-- MultiHeadAttention   becomes                    +-- k --MultiHeadAttention
    X --MatMul(Wv)--+                                                    +-- v
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.graph import drop_unused, read_counts


def merge_qkv(model: Any) -> list[str]:
    """Rewrite ``model`` in place; returns the names of the merged MatMuls."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    reads = read_counts(graph)
    merged: list[str] = []
    replaced: dict[str, list[Any]] = {}  # first old MatMul's output -> the nodes in its place
    gone: set[str] = set()
    for node in graph.node:
        if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft" or len(node.input) < 3:
            continue
        mms = [producer.get(name) for name in node.input[:3]]
        if not all(_own_weight(m, inits) and reads[m.output[0]] == 1 for m in mms):
            continue  # packed or cross attention, or a Q/K/V output read elsewhere
        if len({m.input[0] for m in mms}) != 1:
            continue
        weights = [numpy_helper.to_array(inits[m.input[1]]) for m in mms]
        tag = f"{node.name}_qkv"
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(weights, axis=1), f"{tag}_weight"),
            numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"{tag}_split"),
        ])
        x = mms[0].input[0]
        replaced[mms[0].output[0]] = [
            helper.make_node("MatMul", [x, f"{tag}_weight"], [f"{tag}_out"], name=f"{tag}_matmul"),
            helper.make_node("Split", [f"{tag}_out", f"{tag}_split"], [m.output[0] for m in mms],
                             axis=-1, name=f"{tag}_split"),
        ]
        gone.update(m.output[0] for m in mms)
        merged.append(f"{tag}_matmul")
    if not merged:
        return []
    # The merged nodes take the first old MatMul's place: its input is already computed
    # there, and MultiHeadAttention comes after all three.
    nodes = []
    for node in graph.node:
        nodes += replaced.get(node.output[0], []) if node.output else []
        if not node.output or node.output[0] not in gone:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unused(graph)  # the three old weights
    return merged


def _own_weight(node: Any, inits: dict[str, Any]) -> bool:
    return (node is not None and node.op_type == "MatMul" and node.input[1] in inits
            and len(inits[node.input[1]].dims) == 2)
