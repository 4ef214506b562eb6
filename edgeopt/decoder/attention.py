"""Hand the exporter's attention plumbing to ONNX ``Attention`` (opset 23) itself.

transformers writes attention as per-head tensors: each projection is reshaped to
``[B, S, H, D]`` and transposed to ``[B, H, S, D]``, the cache is concatenated onto the
past, grouped-query K/V are repeated to every query head (Unsqueeze, Expand, Reshape,
and a dozen shape ops to compute the target shape), and the result is transposed and
reshaped back. The exporter keeps every one of those nodes, about 18 per layer plus
the shape arithmetic. ONNX's ``Attention`` takes 3-D ``[B, S, H*D]`` inputs with
``q_num_heads``/``kv_num_heads`` (grouped K/V without copies) and ``past_key``/
``past_value`` inputs that it concatenates itself, and ``RotaryEmbedding`` takes the
same 3-D layout. Folding into them cuts SmolLM2's decode step from 1,496 to 653 nodes;
decode ran about 1.35x faster with INT4 weights, where per-node cost is a large share of
a step, and about 1.2x in fp32 (benchmarks/RESULTS.md).

Two rewrites, each applied per Attention node only where its whole pattern is found:

- *grouped K/V*: ``Reshape(Expand(Unsqueeze(kv)))`` in front of K or V is bypassed;
- *3-D with cache*: Q, the new K and the new V each come from
  ``Transpose(Reshape(x))`` (optionally through ``RotaryEmbedding``), K and V are
  ``Concat(past graph input, new)`` and the output goes through
  ``Transpose -> Reshape``; all of it becomes one 3-D Attention with past inputs.

The caller checks the rewritten graph against the original on real feeds before
keeping it (:func:`same_outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.graph import drop_unused, node_attrs

_HEAD_PERM = [0, 2, 1, 3]  # [B, S, H, D] <-> [B, H, S, D]


@dataclass(frozen=True)
class Folded:
    """How many Attention nodes each rewrite changed."""

    grouped_kv: int
    three_d: int


def fold_attention(model: Any, heads: int, kv_heads: int) -> Folded:
    """Rewrite ``model``'s Attention nodes in place (see the module docstring) and drop
    what no longer feeds an output. ``heads``/``kv_heads``: the model's query and K/V head
    counts."""
    graph = model.graph
    grouped = sum(_bypass_repeat_kv(graph, node) for node in list(graph.node) if _is_attention(node))
    three_d = 0
    for node in list(graph.node):
        if _is_attention(node) and _to_three_d(graph, node, heads, kv_heads):
            three_d += 1
    if grouped or three_d:
        drop_unused(graph)
    return Folded(grouped, three_d)


def same_outputs(original: bytes, rewritten: bytes, feeds: Mapping[str, np.ndarray],
                 rtol: float = 1e-4) -> bool:
    """Whether two serialized graphs give the same outputs on ``feeds`` (max abs
    difference within ``rtol`` of each output's magnitude); a rewritten graph that
    onnxruntime rejects is not the same."""
    import onnxruntime as ort

    results = []
    for blob in (original, rewritten):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            results.append(session.run(None, dict(feeds)))
        except Exception:  # onnxruntime's errors share no narrower base class
            if blob is original:
                raise
            return False  # a rewrite that does not even run is not the same graph
    for a, b in zip(*results, strict=True):
        if a.shape != b.shape:
            return False
        scale = max(float(np.abs(a).max(initial=0.0)), 1.0)
        if float(np.abs(a - b).max(initial=0.0)) > rtol * scale:
            return False
    return True


def _is_attention(node: Any) -> bool:
    return node.op_type == "Attention" and node.domain in ("", "ai.onnx")


def _producers(graph: Any) -> dict[str, Any]:
    return {out: n for n in graph.node for out in n.output}


def _consumers(graph: Any, name: str) -> list[Any]:
    return [n for n in graph.node if name in n.input]


def _made_by(producers: dict[str, Any], name: str, op: str) -> Any | None:
    node = producers.get(name)
    return node if node is not None and node.op_type == op else None


def _bypass_repeat_kv(graph: Any, node: Any) -> int:
    """Feed K and V to ``node`` without transformers' ``repeat_kv`` copies."""
    producers = _producers(graph)
    bypassed = 0
    for slot in (1, 2):
        reshape = _made_by(producers, node.input[slot], "Reshape")
        expand = reshape and _made_by(producers, reshape.input[0], "Expand")
        unsqueeze = expand and _made_by(producers, expand.input[0], "Unsqueeze")
        if unsqueeze:
            node.input[slot] = unsqueeze.input[0]
            bypassed = 1
    return bypassed


def _swaps_heads(node: Any) -> bool:
    """Whether ``node`` is the ``[B, S, H, D] <-> [B, H, S, D]`` Transpose."""
    return node.op_type == "Transpose" and list(node_attrs(node).get("perm") or []) == _HEAD_PERM


def _unview(producers: dict[str, Any], name: str) -> str | None:
    """``x`` when ``name`` is ``Transpose(Reshape(x), perm=[0, 2, 1, 3])``."""
    transpose = producers.get(name)
    if transpose is None or not _swaps_heads(transpose):
        return None
    reshape = _made_by(producers, transpose.input[0], "Reshape")
    return reshape.input[0] if reshape else None


def _flat_source(producers: dict[str, Any], name: str, num_heads: int) -> tuple[str, list[Any]] | None:
    """The 3-D tensor behind a per-head input, and the node(s) that stand for it in 3-D
    (a RotaryEmbedding over the 3-D tensor, or none)."""
    from onnx import helper

    rotary = _made_by(producers, name, "RotaryEmbedding")
    flat = _unview(producers, rotary.input[0] if rotary else name)
    if flat is None:
        return None
    if rotary is None:
        return flat, []
    out = f"{rotary.output[0]}/3d"
    kwargs = node_attrs(rotary) | {"num_heads": num_heads}
    node = helper.make_node("RotaryEmbedding", [flat, *rotary.input[1:]], [out],
                            name=f"{rotary.name}/3d", **kwargs)
    return out, [node]


def _to_three_d(graph: Any, node: Any, heads: int, kv_heads: int) -> bool:
    from onnx import helper

    if len(node.input) != 4 or len(node.output) != 1:
        return False
    producers = _producers(graph)
    concat_k = _made_by(producers, node.input[1], "Concat")
    concat_v = _made_by(producers, node.input[2], "Concat")
    inputs = {i.name for i in graph.input}
    if not (concat_k and concat_v) or any(len(c.input) != 2 or c.input[0] not in inputs
                                         or node_attrs(c).get("axis") not in (2, -2)  # the sequence axis
                                         for c in (concat_k, concat_v)):
        return False
    q = _flat_source(producers, node.input[0], heads)
    k = _flat_source(producers, concat_k.input[1], kv_heads)
    v = _flat_source(producers, concat_v.input[1], kv_heads)
    after = _consumers(graph, node.output[0])
    if not (q and k and v) or len(after) != 1:
        return False
    back = _consumers(graph, after[0].output[0])
    if len(back) != 1 or back[0].op_type != "Reshape" or not _swaps_heads(after[0]):
        return False
    kwargs = node_attrs(node) | {"q_num_heads": heads, "kv_num_heads": kv_heads}
    flat_out = f"{node.output[0]}/3d"
    folded = helper.make_node(
        "Attention", [q[0], k[0], v[0], node.input[3], concat_k.input[0], concat_v.input[0]],
        [flat_out, concat_k.output[0], concat_v.output[0]], name=f"{node.name}/3d", **kwargs)
    # The final Reshape stays: its target may be 3-D (Llama) or 2-D for a Gemm (GPT-2),
    # and [B, S, H*D] has the same element order as the [B, S, H, D] it reshaped before.
    back[0].input[0] = flat_out
    # The old nodes lose their outputs (dead code, dropped later); the new ones go where
    # the Attention was, after everything they read.
    for old in (node, concat_k, concat_v):
        old.output[:] = [f"{o}/unused" for o in old.output]
    at = list(graph.node).index(node)
    for offset, new in enumerate([*q[1], *k[1], *v[1], folded]):
        graph.node.insert(at + 1 + offset, new)
    return True
