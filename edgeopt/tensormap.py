"""Which tensors of two models mean the same thing, and what computes them.

Read-only analysis of ONNX graphs for :mod:`edgeopt.intermediates`: topological order,
the nodes between compared tensors, the dequantized value a QDQ graph passes on, and
the tensor that holds each PyTorch module's output in a TorchScript export.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

# Quantization plumbing: never the op that names what a candidate node does.
_PLUMBING = {"Cast", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
# Ops that compute on quantized data (MatMulInteger, MatMulNBits, QAttention, QLinearConv...).
_QUANTIZED = re.compile(r"Integer|NBits|Quantized|^Q[A-Z]|^DynamicQuantize[A-Z]")
# Names the TorchScript exporter gives: '<scope>/<Op>[_N]' nodes, '<node>_output_N' tensors.
# Quantizer-made names ('MatMul_quant', '..._output_0_QuantizeLinear') do not match.
_EXPORT_NODE = re.compile(r"^(/.+/)([A-Za-z]+)(?:_\d+)?$")
_EXPORT_TENSOR = re.compile(r"^(/.+/)([A-Za-z]+)(?:_\d+)?_output_\d+$")


@dataclass(frozen=True)
class Graph:
    """An ONNX graph's nodes in topological order and who produces and reads what."""

    nodes: tuple[Any, ...]
    producer: dict[str, int]  # tensor -> index in nodes
    consumers: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]
    live: frozenset[str]  # node outputs computed from a graph input (not constants)

    def dequantized(self, tensor: str) -> str:
        """The tensor a QDQ graph passes on in place of ``tensor`` (its QuantizeLinear ->
        DequantizeLinear output), else ``tensor``. QDQ quantizers may drop a Relu and let
        the quantization range clip instead, so only the dequantized value means the same."""
        users = [self.nodes[k] for k in self.consumers.get(tensor, ())]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return tensor
        after = [self.nodes[k] for k in self.consumers.get(users[0].output[0], ())]
        if after and all(n.op_type == "DequantizeLinear" for n in after):
            return after[0].output[0]
        return tensor


def graph_of(model: Any) -> Graph:
    """Index an ONNX model's main graph (file order kept among independent nodes)."""
    g = model.graph
    made = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    deps = [{made[x] for x in n.input if x in made} for n in g.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    nodes = tuple(g.node[i] for i in order)
    inputs = {i.name for i in g.input}
    live = set(inputs)
    for n in nodes:
        if any(x in live for x in n.input):
            live.update(o for o in n.output if o)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for x in dict.fromkeys(n.input):
            consumers.setdefault(x, []).append(k)
    return Graph(nodes, producer, {t: tuple(ks) for t, ks in consumers.items()},
                 tuple(o.name for o in g.output), frozenset(live - inputs))


def upstream(g: Graph, compared: set[str]) -> dict[str, tuple[str, ...]]:
    """For each compared tensor, the nearest compared tensors its node reads from."""
    frontier: dict[str, frozenset[str]] = {}
    result: dict[str, tuple[str, ...]] = {}
    for node in g.nodes:
        up = frozenset().union(*(frontier.get(x, frozenset()) for x in node.input if x))
        for o in node.output:
            if o in compared:
                result[o] = tuple(sorted(up))
                frontier[o] = frozenset((o,))
            elif o:
                frontier[o] = up
    return result


def segment_op(g: Graph, tensor: str, stop: set[str], like: str = "") -> str:
    """What computes ``tensor`` from the nearest ``stop`` tensors upstream, in one name:
    the op of ``like``'s family (a quantized graph computes MatMul with MatMulInteger,
    Cast and Mul), else the producer's op; '(QDQ)' when it dequantizes on the way."""
    seen, stack = set(), [g.producer[tensor]]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        stack += [g.producer[x] for x in g.nodes[k].input
                  if x and x not in stop and x in g.producer and x in g.live]
    types = [g.nodes[k].op_type for k in sorted(seen)]
    low = like.lower()
    family = [t for t in types if low and t not in _PLUMBING and low in t.lower()]
    quantized = [t for t in dict.fromkeys(types) if t not in _PLUMBING and _QUANTIZED.search(t)]
    if family:
        op = family[-1]
    elif quantized:  # e.g. an unfused attention whose projections are MatMulNBits
        op = f"{len(types)} nodes incl. {', '.join(quantized)}"
    else:
        op = g.nodes[g.producer[tensor]].op_type
    return op + " (QDQ)" if "DequantizeLinear" in types else op


# -- PyTorch modules -> exported tensors -------------------------------------------------------
@dataclass(frozen=True)
class ModuleMatch:
    """A PyTorch module and the ONNX tensor that holds its output."""

    path: str
    kind: str
    tensor: str
    export_op: str  # the exporter op that made the tensor ('Add', 'MatMul', ...)
    bias: np.ndarray | None  # subtract from the module output: the graph fused it away


def hookable_modules(module: Any) -> dict[str, Any]:
    """Modules worth comparing: leaf Linear, LayerNorm, Embedding and activation modules,
    and self-attention cores (where softmax and masking happen)."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding)
    out = {}
    for path, mod in module.named_modules():
        leaf = not any(True for _ in mod.children())
        activation = type(mod).__module__ in ("torch.nn.modules.activation", "transformers.activations")
        if (leaf and (isinstance(mod, kinds) or activation)) or type(mod).__name__.endswith(
                "SelfAttention"):
            out[path] = mod
    return out


def match_modules(modules: dict[str, Any], g: Graph) -> tuple[list[ModuleMatch], list[str]]:
    """Each module's output tensor: the last live tensor of its export scope. Returns the
    matches and the module paths with no tensor (fused away or renamed)."""
    import torch

    scopes = _scope_tensors(g)
    matches, missing, taken = [], [], set()
    for path, mod in modules.items():
        hit = scopes.get(_scope(path))
        if hit is None or hit[0] in taken:
            missing.append(path)
            continue
        tensor, op = hit
        bias = None
        if isinstance(mod, torch.nn.Linear) and op == "MatMul" and mod.bias is not None:
            bias = mod.bias.detach().float().numpy()  # the bias Add went into a fused op
        taken.add(tensor)
        matches.append(ModuleMatch(path, type(mod).__name__, tensor, op, bias))
    return matches, missing


def _scope_tensors(g: Graph) -> dict[str, tuple[str, str]]:
    """Export scope ('/model/bert/.../query/') -> (last live tensor in it, its export op).

    Fused nodes lose the scope in their name ('SkipLayerNorm_AddBias_0') but keep the
    exporter's name on their output, so tensor names count as much as node names.
    """
    found: dict[str, tuple[str, str]] = {}
    for node in g.nodes:
        named = []
        if node.output and node.output[0] and (m := _EXPORT_NODE.match(node.name)):
            named.append((m.group(1), node.output[0], m.group(2)))
        named += [(m.group(1), o, m.group(2)) for o in node.output if (m := _EXPORT_TENSOR.match(o))]
        for scope, tensor, op in named:
            if tensor not in g.live:
                continue
            parts = scope.strip("/").split("/")
            for k in range(1, len(parts) + 1):
                found["/" + "/".join(parts[:k]) + "/"] = (tensor, op)
    return found


def _scope(path: str) -> str:
    """Module path -> export scope: 'model.encoder.layer.0.attn' -> '/model/encoder/layer.0/attn/'."""
    parts: list[str] = []
    for seg in path.split("."):
        if seg.isdigit() and parts:
            parts[-1] += "." + seg
        else:
            parts.append(seg)
    return "/" + "/".join(parts) + "/"
