"""Small helpers over ONNX graphs: counts, attributes, readers, dead-code removal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


def op_counts(path: Path | str, domain: str | None = None) -> Counter[str]:
    """How many nodes of each op type the graph has (optionally one domain only)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node if domain is None or n.domain == domain)


def float_weight_matmuls(path: Path | str) -> list[str]:
    """Names of MatMul/Gemm nodes that still multiply by a float initializer (unquantized)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    floats = {t.name for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in floats]


def node_attrs(node: Any) -> dict[str, Any]:
    """A node's attributes as plain Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_counts(graph: Any) -> dict[str, int]:
    """How many times each tensor is read: by node inputs, and once more per graph output
    (a rewrite that changes a tensor must know whether anything else sees it)."""
    counts: dict[str, int] = {}
    for name in [i for n in graph.node for i in n.input] + [o.name for o in graph.output]:
        counts[name] = counts.get(name, 0) + 1
    return counts


def drop_unused(graph: Any) -> None:
    """Remove nodes no graph output depends on, then initializers nothing reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
