"""Merge MatMulNBits that read the same input into one wider MatMulNBits and a Split.

A decoder layer's q/k/v projections (and gate/up, when both have the same bits) all
multiply the same normalized hidden state. At decode time each is a matrix-vector
product of a few microseconds, so per-kernel dispatch is a large share of its cost:
SmolLM2's k and v projections (N=192) took almost as long as q (N=576). One MatMulNBits
over the concatenated output columns does the same arithmetic in one dispatch; decode
ran about 5% faster with INT4 weights. Every output column is computed exactly as
before (the activation blocks are shared, the weight and scale rows are concatenated),
so the logits are bit-identical.

The merged node is named after its members joined by ``+``, so reports and tests can
still tell which projections it holds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from edgeopt.graph import node_attrs

# Attributes that must agree for two MatMulNBits to share one kernel call.
_SAME = ("K", "bits", "block_size", "accuracy_level")


def fuse_siblings(graph: Any) -> list[list[str]]:
    """Merge each group of plain MatMulNBits (A, B, scales; initializer B and scales)
    with the same input and ``_SAME`` attributes; returns the member names of each
    merged group. Call it after anything that refers to a member's ``B`` by name; the
    members' old initializers stay until :func:`edgeopt.graph.drop_unused`."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    readers: defaultdict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            readers[name] += 1
    groups: defaultdict[tuple, list[Any]] = defaultdict(list)
    for node in graph.node:
        attrs = node_attrs(node)
        own = all(n in inits and readers[n] == 1 for n in node.input[1:])
        if node.op_type == "MatMulNBits" and len(node.input) == 3 and own and set(attrs) <= {*_SAME, "N"}:
            groups[(node.input[0], *(attrs.get(k) for k in _SAME))].append(node)
    merged = []
    for members in (g for g in groups.values() if len(g) > 1):
        name = "+".join(n.name for n in members)
        widths = [int(node_attrs(n)["N"]) for n in members]
        data = np.concatenate([numpy_helper.to_array(inits[n.input[1]]) for n in members])
        scales = np.concatenate([numpy_helper.to_array(inits[n.input[2]]) for n in members])
        stem = members[0].input[1].rsplit(".", 1)[0] + ".fused"
        graph.initializer.extend([numpy_helper.from_array(data, f"{stem}.B"),
                                  numpy_helper.from_array(scales, f"{stem}.scales"),
                                  numpy_helper.from_array(np.array(widths, np.int64), f"{stem}.split")])
        attrs = node_attrs(members[0]) | {"N": sum(widths)}
        wide = helper.make_node("MatMulNBits", [members[0].input[0], f"{stem}.B", f"{stem}.scales"],
                                [f"{stem}.out"], name=name, domain="com.microsoft", **attrs)
        split = helper.make_node("Split", [f"{stem}.out", f"{stem}.split"],
                                 [n.output[0] for n in members], name=f"{stem}/Split", axis=-1)
        at = list(graph.node).index(members[0])
        for node in members:
            graph.node.remove(node)
        graph.node.insert(at, split)
        graph.node.insert(at, wide)
        merged.append([n.name for n in members])
    return merged
