"""Activation-aware per-channel weight scales, searched on calibration data and folded
where the float graph absorbs them exactly.

A MatMul's 4-bit rounding error matters in proportion to the input channel it multiplies:
channel ``j`` of ``x @ W`` carries ``x_j * W[j, :]``. Scaling row ``j`` of ``W`` up by
``s_j`` and the input down by the same factor leaves the float product unchanged, but
the loud channels' weights now use more of each block's grid (AWQ, Lin et al., 2023,
"AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration").
Per group, ``s = rms(x)^alpha`` with ``alpha`` from a grid; the chosen ``alpha`` has the
least output error ``e^T H e`` summed over the group's MatMuls, each rounded at its own
bits and block. ``alpha = 0`` is on the grid, so a group is never made worse by this
measure.

Two places absorb ``1/s`` for free:

- an RMSNorm's weight, for the MatMuls that read the norm (q, k and v; gate and up);
- a value projection's output columns, for the output projection after attention: each
  query head reads one KV head, so ``s`` is one value per KV channel, repeated over the
  query heads that share it. Column scales of the value weight scale its block scales
  exactly, so its own rounding is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.graph import read_counts
from edgeopt.quant.blockquant import dequantize, quantize_weight

ALPHAS = np.linspace(0.0, 1.0, 11)
_NORMS = ("RMSNormalization", "SimplifiedLayerNormalization")


@dataclass(frozen=True)
class ScaleGroup:
    """MatMuls that read one activation, and the initializer that takes ``1/s``."""

    activation: str
    matmuls: tuple[str, ...]  # node names
    weights: tuple[str, ...]  # their [K, N] initializers
    fold: str  # a norm weight [K], or a value weight whose columns are the KV channels
    owner: str  # the node that reads ``fold``
    kv_heads: int = 0  # value groups: KV heads, and query heads per KV head
    repeat: int = 1

    def expand(self, s: np.ndarray) -> np.ndarray:
        """Scales per folded channel -> per input channel of the MatMuls. Query heads of
        one KV head are consecutive (query head ``i`` reads KV head ``i // repeat``)."""
        if not self.kv_heads:
            return s
        return np.repeat(s.reshape(self.kv_heads, 1, -1), self.repeat, axis=1).reshape(-1)

    def pool(self, x: np.ndarray) -> np.ndarray:
        """Per input channel -> per folded channel (mean over the query heads sharing it)."""
        if not self.kv_heads:
            return x
        return x.reshape(self.kv_heads, self.repeat, -1).mean(axis=1).reshape(-1)


def scale_groups(model: Any) -> list[ScaleGroup]:
    """Groups whose scale can be folded: RMSNorm -> MatMuls (the norm output read by
    MatMuls alone), and MatMul(Reshape(Attention(q, k, MatMul(x, V))), O)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    counts = read_counts(graph)

    def own_matmul(node: Any) -> bool:
        init = inits.get(node.input[1]) if node is not None and node.op_type == "MatMul" else None
        return init is not None and len(init.dims) == 2 and counts[node.input[1]] == 1

    groups = []
    for node in graph.node:
        if node.op_type in _NORMS and len(node.input) > 1 and node.input[1] in inits:
            users = readers.get(node.output[0], [])
            # A norm weight may be shared (identical tables are stored once); it is
            # copied for this norm when its scale moves.
            if users and all(own_matmul(u) for u in users) and counts[node.output[0]] == len(users):
                groups.append(ScaleGroup(node.output[0], tuple(u.name for u in users),
                                         tuple(u.input[1] for u in users), node.input[1], node.name))
        elif own_matmul(node):
            value = _value_group(node, producers, counts, own_matmul)
            if value is not None:
                groups.append(value)
    return groups


# Attention ops whose third input is V, by the attribute naming their query heads (ONNX
# Attention, and onnxruntime's GroupQueryAttention of an in-place KV cache).
_HEADS_ATTR = {"Attention": "q_num_heads", "GroupQueryAttention": "num_heads"}


def _value_group(node: Any, producers: dict[str, Any], counts: dict[str, int],
                 own_matmul: Callable[[Any], bool]) -> ScaleGroup | None:
    """The output projection's group when its input is attention over a value MatMul
    with its own weight, and nothing else reads the tensors in between."""
    from onnx import helper

    reshape = producers.get(node.input[0])
    if reshape is None or reshape.op_type != "Reshape" or counts[node.input[0]] != 1:
        return None
    attention = producers.get(reshape.input[0])
    if attention is None or attention.op_type not in _HEADS_ATTR or len(attention.input) < 3:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in attention.attribute}
    heads = int(attrs.get(_HEADS_ATTR[attention.op_type], 0))
    kv_heads = int(attrs.get("kv_num_heads", 0))
    value = producers.get(attention.input[2])
    if not heads or not kv_heads or heads % kv_heads or counts[reshape.input[0]] != 1:
        return None
    if counts[attention.input[2]] != 1 or not own_matmul(value):
        return None
    return ScaleGroup(node.input[0], (node.name,), (node.input[1],), value.input[1], value.name,
                      kv_heads=kv_heads, repeat=heads // kv_heads)


def search_scales(model: Any, groups: list[ScaleGroup], moments: dict[str, np.ndarray],
                  layout: dict[str, tuple[int, int]]) -> dict[str, tuple[float, float]]:
    """Fold each group's best ``s`` into ``model`` (in place) and ``moments`` (divided by
    ``s s^T``); ``layout``: MatMul name -> (bits, block). Returns ``{activation: (alpha,
    error with s / error without)}`` for the groups that moved."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    counts = read_counts(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    chosen = {}
    for group in groups:
        if all(layout[m][0] != 4 for m in group.matmuls):
            continue  # 8-bit weights lose too little for scales to pay
        h = moments[group.activation]
        weights = [numpy_helper.to_array(inits[w]).astype(np.float64) for w in group.weights]
        rms = group.pool(np.sqrt(np.maximum(np.diag(h), 1e-12)))
        errors = []
        for alpha in ALPHAS:
            full = group.expand(_scales(rms, alpha))
            errors.append(sum(_error(w * full[:, None], h / np.outer(full, full), *layout[m])
                              for w, m in zip(weights, group.matmuls, strict=True)))
        best = int(np.argmin(errors))
        if ALPHAS[best] == 0.0:
            continue
        s = _scales(rms, ALPHAS[best])
        fold_scales(model, group, s, inits, counts, nodes)
        full = group.expand(s)
        moments[group.activation] = h / np.outer(full, full)
        chosen[group.activation] = (float(ALPHAS[best]), float(errors[best] / max(errors[0], 1e-30)))
    return chosen


def fold_scales(model: Any, group: ScaleGroup, s: np.ndarray, inits: dict[str, Any],
                counts: dict[str, int], nodes: dict[str, Any]) -> None:
    """Divide the group's input by ``s`` (per folded channel) where it is made, and
    multiply the rows of every MatMul weight of the group by it: the float graph computes
    the same function."""
    from onnx import numpy_helper

    full = group.expand(s)
    fold = numpy_helper.to_array(inits[group.fold])
    # A norm weight [K] divides per channel; a value weight [K_in, channels] per column.
    folded = numpy_helper.from_array((fold / s).astype(fold.dtype), group.fold)
    if counts[group.fold] > 1:  # shared with other norms: this one gets its own copy
        folded.name = f"{group.fold}/{group.owner}"
        model.graph.initializer.append(folded)
        owner = nodes[group.owner]
        owner.input[list(owner.input).index(group.fold)] = folded.name
    else:
        inits[group.fold].CopyFrom(folded)
    for name in group.weights:
        w = numpy_helper.to_array(inits[name]).astype(np.float64)
        inits[name].CopyFrom(numpy_helper.from_array((w * full[:, None]).astype(np.float32), name))


def _scales(rms: np.ndarray, alpha: float) -> np.ndarray:
    """``rms^alpha``, centred so the largest and smallest scale are reciprocal."""
    s = rms**alpha
    return s / np.sqrt(s.max() * s.min())


def _error(w: np.ndarray, h: np.ndarray, bits: int, block: int) -> float:
    """``e^T H e`` of round-to-nearest at ``bits``/``block`` for ``w`` [K, N]."""
    q, scales = quantize_weight(np.ascontiguousarray(w.T), bits, block)
    e = dequantize(q, scales, w.shape[0]).T - w
    return float((e * (h @ e)).sum())
