"""Hand each folded Attention to onnxruntime's ``GroupQueryAttention`` so a decode step
can write its new K/V into the cache in place.

ONNX ``Attention`` returns ``present = concat(past, new)``: every decode step copies the
whole cache of every layer into a fresh tensor (on INT4 SmolLM2 at a 160-token past,
about two thirds of attention's time, a tenth of the step). ``GroupQueryAttention``
(``com.microsoft``) writes the new K/V at offset ``seqlens_k`` of ``present`` and, when
the caller binds ``past`` and ``present`` to the same buffer, leaves the rest of it
where it is. Called the plain way (separate
past and present), it returns the same concatenated present as Attention, so the graph
keeps the io contract either way; :mod:`edgeopt.decoder.generate` binds the buffer.

Per Attention node (3-D, with past inputs, as :func:`fold_attention` left it):

- Q and K come from ``RotaryEmbedding(x, Cos(a), Sin(a))`` with
  ``a = Mul(positions, inv_freq)``: GQA rotates ``x`` itself from cos/sin tables built
  once per run for positions ``0..total-1`` from the same ``inv_freq`` (no constant
  tables, so the file does not grow), indexed by ``position_ids``;
- Q and K without rotary (GPT-2) go in as they are;
- the additive mask stays as ``attention_bias``: it carries padding and any sliding
  window. ``seqlens_k`` is ``total - 1`` for every row (the mask, not GQA, skips padded
  keys) and ``query_seqlens`` the new-token count, which GQA needs for a batch of
  multi-token rows over a past.

A node that matches none of this keeps ONNX Attention. The caller checks the graph
against the export on real feeds before keeping it (:func:`same_outputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.graph import drop_unused, node_attrs

DOMAIN = "com.microsoft"
_PREFIX = "gqa"
# Attention attributes GQA has no counterpart for, with the value that makes them moot.
_NEUTRAL = {"is_causal": 0, "qk_matmul_output_mode": 0, "softcap": 0.0}


def to_group_query_attention(model: Any) -> int:
    """Rewrite ``model``'s 3-D Attention nodes in place (see the module docstring); returns
    how many were rewritten."""
    from onnx import helper

    graph = model.graph
    producers = {out: n for n in graph.node for out in n.output}
    inits = {t.name for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    tables: dict[str, tuple[str, str]] = {}  # inv_freq initializer -> (cos, sin) tensors
    prelude: list[Any] = []
    rewritten = 0
    for node in list(graph.node):
        if not _is_candidate(node, inputs):
            continue
        rotary = _rotary(producers, node, inits)
        if rotary is None:
            continue
        attrs = node_attrs(node)
        gqa_attrs: dict[str, Any] = {"num_heads": attrs["q_num_heads"],
                                     "kv_num_heads": attrs["kv_num_heads"]}
        if "scale" in attrs:
            gqa_attrs["scale"] = attrs["scale"]
        q, k, cos, sin, positions = node.input[0], node.input[1], "", "", ""
        if rotary:
            rope_q, rope_k, inv_freq = rotary
            if inv_freq not in tables:
                nodes, tables[inv_freq] = _tables(inv_freq, len(tables))
                prelude.extend(nodes)
            cos, sin = tables[inv_freq]
            q, k, positions = rope_q.input[0], rope_k.input[0], "position_ids"
            gqa_attrs |= {"do_rotary": 1,
                          "rotary_interleaved": int(node_attrs(rope_q).get("interleaved", 0))}
        new = helper.make_node(
            "GroupQueryAttention",
            [q, k, node.input[2], node.input[4], node.input[5], f"{_PREFIX}/seqlens_k",
             f"{_PREFIX}/total", cos, sin, positions, node.input[3], "", "", "", "", "",
             f"{_PREFIX}/query_seqlens"],
            list(node.output), name=f"{node.name}/gqa", domain=DOMAIN, **gqa_attrs)
        at = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(at, new)
        rewritten += 1
    if not rewritten:
        return 0
    for offset, node in enumerate([*_lengths(graph), *prelude]):
        graph.node.insert(offset, node)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    drop_unused(graph)  # the RotaryEmbedding nodes and their Cos/Sin
    return rewritten


def _is_candidate(node: Any, graph_inputs: set[str]) -> bool:
    if node.op_type != "Attention" or node.domain not in ("", "ai.onnx"):
        return False
    if len(node.input) != 6 or len(node.output) != 3 or not node.input[3]:
        return False
    attrs = node_attrs(node)
    if any(attrs.get(name, value) != value for name, value in _NEUTRAL.items()):
        return False
    return node.input[4] in graph_inputs and node.input[5] in graph_inputs


def _rotary(producers: dict[str, Any], node: Any, inits: set[str]) -> tuple[Any, Any, str] | tuple[()] | None:
    """``(rope_q, rope_k, inv_freq)`` when Q and K are rotated by one shared angle table,
    ``()`` when neither is rotated, None when the pattern is anything else."""
    rope_q, rope_k = (producers.get(node.input[i]) for i in (0, 1))
    is_rope = [n is not None and n.op_type == "RotaryEmbedding" for n in (rope_q, rope_k)]
    if not any(is_rope):
        return ()
    if not all(is_rope) or len(rope_q.input) != 3 or len(rope_k.input) != 3:
        return None
    if any(node_attrs(r).get("rotary_embedding_dim", 0) for r in (rope_q, rope_k)):
        return None  # partial rotary: GQA's tables would have to cover head_dim
    # The exporter may give Q and K their own Cos/Sin nodes; they must share the angle.
    trig = [producers.get(name) for r in (rope_q, rope_k) for name in r.input[1:]]
    if any(t is None for t in trig) or [t.op_type for t in trig] != ["Cos", "Sin"] * 2:
        return None
    if len({t.input[0] for t in trig}) != 1:
        return None
    angle = producers.get(trig[0].input[0])
    if angle is None or angle.op_type != "Mul":
        return None
    inv_freq = next((i for i in angle.input if i in inits), None)
    if inv_freq is None or not _counts_positions(producers, next(i for i in angle.input if i != inv_freq)):
        return None
    return rope_q, rope_k, inv_freq


def _counts_positions(producers: dict[str, Any], name: str) -> bool:
    """Whether ``name`` is ``position_ids`` as float, through Unsqueeze/Cast only."""
    while name != "position_ids":
        node = producers.get(name)
        if node is None or node.op_type not in ("Unsqueeze", "Cast"):
            return False
        name = node.input[0]
    return True


def _lengths(graph: Any) -> list[Any]:
    """``seqlens_k`` (total - 1 per row), ``total`` and ``query_seqlens`` from the
    attention mask's and input_ids' shapes; adds the constants the rewrite's nodes share."""
    from onnx import TensorProto, numpy_helper

    p = _PREFIX
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), f"{p}/{name}")
                             for name, v in (("axis0", [0]), ("axis1", [1]), ("zero", 0), ("one", 1)))
    return [
        _node("Shape", ["attention_mask"], [f"{p}/mask_shape"]),
        _node("Gather", [f"{p}/mask_shape", f"{p}/axis1"], [f"{p}/total1"], axis=0),
        _node("Gather", [f"{p}/mask_shape", f"{p}/axis0"], [f"{p}/batch1"], axis=0),
        _node("Sub", [f"{p}/total1", f"{p}/axis1"], [f"{p}/last1"]),
        _node("Expand", [f"{p}/last1", f"{p}/batch1"], [f"{p}/last"]),
        _node("Cast", [f"{p}/last"], [f"{p}/seqlens_k"], to=TensorProto.INT32),
        _node("Squeeze", [f"{p}/total1", f"{p}/axis0"], [f"{p}/total64"]),
        _node("Cast", [f"{p}/total64"], [f"{p}/total"], to=TensorProto.INT32),
        _node("Shape", ["input_ids"], [f"{p}/ids_shape"]),
        _node("Gather", [f"{p}/ids_shape", f"{p}/axis1"], [f"{p}/new1"], axis=0),
        _node("Expand", [f"{p}/new1", f"{p}/batch1"], [f"{p}/new"]),
        _node("Cast", [f"{p}/new"], [f"{p}/query_seqlens"], to=TensorProto.INT32),
    ]


def _tables(inv_freq: str, index: int) -> tuple[list[Any], tuple[str, str]]:
    """Nodes computing cos/sin ``[total, head_dim / 2]`` of ``arange(total) * inv_freq``,
    the same float products the export's rotary took per position."""
    from onnx import TensorProto

    p = f"{_PREFIX}/rope{index}"
    nodes = [
        _node("Range", [f"{_PREFIX}/zero", f"{_PREFIX}/total64", f"{_PREFIX}/one"], [f"{p}/positions"]),
        _node("Cast", [f"{p}/positions"], [f"{p}/positions_f"], to=TensorProto.FLOAT),
        _node("Unsqueeze", [f"{p}/positions_f", f"{_PREFIX}/axis1"], [f"{p}/column"]),
        _node("Mul", [f"{p}/column", inv_freq], [f"{p}/angle"]),
        _node("Cos", [f"{p}/angle"], [f"{p}/cos"]),
        _node("Sin", [f"{p}/angle"], [f"{p}/sin"]),
    ]
    return nodes, (f"{p}/cos", f"{p}/sin")


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> Any:
    """A node named after its output (the prefix marks it as this rewrite's)."""
    from onnx import helper

    return helper.make_node(op, inputs, outputs, name=outputs[0], **attrs)
