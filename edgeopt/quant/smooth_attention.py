"""Smooth the input of each packed Attention before dynamic INT8 (SmoothQuant).

onnxruntime's QAttention quantizes its input with one scale per tensor, and a BERT
LayerNorm output carries a few channels far louder than the rest (MiniLM: the first
error jump of every short sentence). Dividing those channels by ``s`` in the LayerNorm's
own scale and bias, and multiplying the matching rows of the packed Q/K/V weight by ``s``,
leaves the attention's result unchanged while its input becomes easy to quantize; every
other reader of the LayerNorm output (the residual) reads it multiplied back by ``s``.

    s_c = max|x_c|^alpha / max|W_c|^(1 - alpha)        (c: input channel)
"""

from __future__ import annotations

from typing import Any

import numpy as np

_NORMS = {"LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3),
          "EmbedLayerNormalization": (5, 6)}  # op -> (scale, bias) input positions


def attention_inputs(model: Any) -> list[str]:
    """Inputs of packed (com.microsoft) Attention nodes that a LayerNorm produces."""
    producer = {n.output[0]: n for n in model.graph.node if n.output}
    return sorted({n.input[0] for n in model.graph.node
                   if n.op_type == "Attention" and n.domain == "com.microsoft"
                   and producer.get(n.input[0]) is not None
                   and producer[n.input[0]].op_type in _NORMS})


def smooth_attention(model: Any, absmax: dict[str, np.ndarray], alpha: float) -> int:
    """Rewrite ``model`` in place for the tensors in ``absmax``; returns how many."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {n.output[0]: n for n in graph.node if n.output}
    done = 0
    outputs = {o.name for o in graph.output}
    for tensor, peak in absmax.items():
        if tensor in outputs:
            continue  # the app reads it: it must keep its values
        norm = producer[tensor]
        attentions = [n for n in graph.node if n.op_type == "Attention" and n.input[0] == tensor]
        weights = [numpy_helper.to_array(inits[a.input[1]]) for a in attentions]
        w_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        s = np.power(np.maximum(peak, 1e-5), alpha) / np.power(np.maximum(w_peak, 1e-5), 1 - alpha)
        s = (s / np.exp(np.log(s).mean())).astype(np.float32)  # geometric mean 1: weights keep their scale
        for position in _NORMS[norm.op_type]:
            _rebind(graph, norm, position, numpy_helper.to_array(inits[norm.input[position]]) / s)
        for attention, weight in zip(attentions, weights, strict=True):
            _rebind(graph, attention, 1, weight * s[:, None])
        restored = f"{tensor}_unsmoothed"
        factor = numpy_helper.from_array(s, f"{tensor}_smooth_factor")
        graph.initializer.append(factor)
        for node in graph.node:
            if node.op_type != "Attention" or node.input[0] != tensor:
                for i, x in enumerate(node.input):
                    if x == tensor:
                        node.input[i] = restored
        at = list(graph.node).index(norm) + 1
        graph.node.insert(at, helper.make_node("Mul", [tensor, factor.name], [restored],
                                               name=f"{tensor}_unsmooth"))
        done += 1
    if done:
        from edgeopt.graph import drop_unused

        drop_unused(graph)  # the replaced weights and scales nothing reads now
    return done


def _rebind(graph: Any, node: Any, position: int, value: np.ndarray) -> None:
    """Feed ``node``'s input ``position`` from a new initializer holding ``value``: the old
    one may be shared (exporters merge equal tensors, e.g. every LayerNorm's ones)."""
    from onnx import numpy_helper

    name = f"{node.input[position]}_smoothed_{node.name or id(node)}"
    graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    node.input[position] = name
