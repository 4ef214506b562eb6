"""Where a graph's bytes are: stored weights (initializers and Constant tensors) per op type
and per layer, for the placement inspection.

A weight counts once, for the op that computes with it: a quantized MatMul weight is read
by a DequantizeLinear whose output feeds the MatMul, so it counts as MatMul's. The layer
comes from node or weight names such as ``/bert/encoder/layer.3/...`` or
``model.layers.3.mlp...``; a node named otherwise (``outlier_split_1_float_matmul``) takes
the layer of the nearest named node it feeds, then of the nearest one it reads.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Nodes that only reformat a weight before the op that uses it.
_PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze"}
_LAYER = re.compile(r"(?:^|[/._])(?:layers?|h|blocks?)[/._](\d+)(?=[/._]|$)")
# Wrapper names that say nothing about where in the model a weight is.
_WRAPPERS = {"", "model", "bert", "roberta", "distilbert", "deberta", "transformer", "encoder",
             "decoder", "base_model", "onnx::"}
_SEARCH_HOPS = 4
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_SCALES = "Q/DQ scales and zero points"
_PACKED_4BIT = {"INT4", "UINT4", "FLOAT4E2M1"}


@dataclass(frozen=True)
class WeightSizes:
    """Stored bytes per op type and per layer (largest first)."""

    total_bytes: int
    by_op_type: tuple[tuple[str, int], ...]
    by_layer: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "by_op_type": dict(self.by_op_type),
                "by_layer": dict(self.by_layer)}


def weight_sizes(model: Path | str | Any) -> WeightSizes:
    """Bytes of every stored tensor of ``model`` (a path or an onnx.ModelProto), grouped."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layer_of = _node_layers(graph, consumers)
    by_op: Counter[str] = Counter()
    by_layer: Counter[str] = Counter()
    stored = [(t.name, tensor_bytes(t)) for t in graph.initializer]
    stored += [(n.output[0], tensor_bytes(a.t)) for n in graph.node if n.op_type == "Constant"
               for a in n.attribute if a.name == "value"]
    for name, size in stored:
        user = _user(name, consumers)
        if user is None:
            op, layer = "(unused)", _layer_from_name(name) or "other"
        else:
            op = user.op_type if user.domain in ("", "ai.onnx") else f"{user.domain}:{user.op_type}"
            if user.op_type in _QDQ and user.input[0] != name:
                op = _SCALES
            # A weight's own name is the surest (fused nodes get names like Attention_4).
            own, layer = _layer_from_name(name), layer_of.get(user.name, "other")
            if own and (own.startswith("layer.") or layer == "other"):
                layer = own
        by_op[op] += size
        by_layer[layer] += size
    return WeightSizes(sum(by_op.values()), tuple(by_op.most_common()),
                       tuple(sorted(by_layer.items(), key=_layer_order)))


def tensor_bytes(tensor: Any) -> int:
    """Stored size of an onnx.TensorProto from its shape and type (also when its data is
    external and not loaded)."""
    import onnx

    count = math.prod(tensor.dims)
    kind = onnx.TensorProto.DataType.Name(tensor.data_type)
    if kind in _PACKED_4BIT:
        return (count + 1) // 2
    if kind == "STRING":
        return sum(len(s) for s in tensor.string_data)
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _user(name: str, consumers: dict[str, list[Any]]) -> Any:
    """The first node that computes with tensor ``name``, past nodes that only reformat it
    (when it is their data input, not a shape or a scale)."""
    node = None
    for _ in range(len(_PASS_THROUGH) + 1):
        readers = consumers.get(name, [])
        if not readers:
            return node
        node = readers[0]
        if node.op_type not in _PASS_THROUGH or node.input[0] != name or not node.output:
            return node
        name = node.output[0]
    return node


def _node_layers(graph: Any, consumers: dict[str, list[Any]]) -> dict[str, str]:
    """Layer of every node: from its name, else the nearest named node it feeds or reads."""
    producer = {o: n for n in graph.node for o in n.output}
    named = {n.name: _layer_from_name(n.name) for n in graph.node}
    out = {}
    for node in graph.node:
        layer = named[node.name]
        if layer is None:
            layer = (_nearest(node, named, lambda n: [c for o in n.output for c in consumers.get(o, [])])
                     or _nearest(node, named, lambda n: [producer[i] for i in n.input if i in producer]))
        out[node.name] = layer or "other"
    return out


def _nearest(start: Any, named: dict[str, str | None], step: Any) -> str | None:
    frontier, seen = [start], {start.name}
    for _ in range(_SEARCH_HOPS):
        frontier = [n for f in frontier for n in step(f) if n.name not in seen]
        for n in frontier:
            seen.add(n.name)
            if named.get(n.name):
                return named[n.name]
    return None


def _layer_from_name(name: str) -> str | None:
    """``layer.3`` for a name inside numbered block 3; a top-level part (``embeddings``,
    ``pooler``, ``classifier``) for a named one; None when the name says nothing."""
    match = _LAYER.search(name)
    if match:
        return f"layer.{int(match.group(1))}"
    parts = [p for p in re.split(r"[/.]", name) if p]
    if len(parts) < 2:
        return None
    for part in parts[:-1]:
        if part.lower() not in _WRAPPERS and not part.startswith("onnx::"):
            return part
    return None


def _layer_order(item: tuple[str, int]) -> tuple[int, int, str]:
    """Numbered layers in order, then the rest largest first."""
    match = re.fullmatch(r"layer\.(\d+)", item[0])
    return (0, int(match.group(1)), "") if match else (1, -item[1], item[0])
