"""Per-channel smoothing of the gated MLP product before a down projection, so the int8
activations MatMulNBits computes with (``accuracy_level`` 4) see no outlier channels.

MatMulNBits at accuracy level 4 quantizes each row of its input to int8 per block of
``block_size`` channels, one scale per block. The product ``act(gate(x)) * up(x)`` that
feeds a gated MLP's down projection has channels up to thousands of times louder than
the median (SmolLM2's layer 11: 2,600x); every other channel in that block then rounds
to a handful of levels.

The fix moves part of that range into the weights (SmoothQuant, Xiao et al., 2022,
"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models"): per channel ``j``, ``s_j = max|x_j|^alpha / max|w_j|^(1 - alpha)``, the up
projection's output column ``j`` divided by ``s_j`` and the down projection's input row
``j`` multiplied by it. The float graph computes the same function. The up projection
keeps its quantization error exactly, because its block scales are per output column;
only the down projection's weights see a wider spread, which they absorb at 8 bits.

With 4-bit weights only this pattern is smoothed: MatMuls fed by an RMSNorm would fold
``s`` into the norm and spread it over the 4-bit q and gate weights, which cost more
than it saved there (scales chosen for the weights' rounding,
:mod:`edgeopt.quant.scale_search`, are folded there instead). 8-bit weights absorb the
spread, so ``smooth_groups`` smooths those groups too (the MatMuls an RMSNorm feeds,
and the output projection after attention) with the same formula, folded where
:func:`edgeopt.quant.scale_search.fold_scales` folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.graph import read_counts
from edgeopt.quant.scale_search import ScaleGroup, fold_scales


@dataclass(frozen=True)
class SmoothPair:
    """A down projection whose input is ``Mul(a, up(x))``, with the two weights to scale."""

    down: str  # the down projection's node name
    activation: str  # its input tensor, the product
    up_weight: str  # [K, N] initializer: its N output columns are the product's channels
    down_weight: str  # [N, M] initializer: its N input rows read the product's channels


def smoothable(model: Any) -> list[SmoothPair]:
    """Down projections that can be smoothed: ``MatMul(Mul(a, MatMul(x, U)), D)`` where
    ``U`` and ``D`` are 2-D float initializers that nothing else reads, and the product
    feeds nothing but this MatMul (else scaling it would change another reader)."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    readers = read_counts(model.graph)

    def own_weight(node: Any) -> bool:
        init = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        return init is not None and len(init.dims) == 2 and readers[node.input[1]] == 1

    pairs = []
    for node in model.graph.node:
        product = producers.get(node.input[0]) if node.input else None
        if not own_weight(node) or product is None or product.op_type != "Mul":
            continue
        if readers[node.input[0]] != 1:
            continue
        ups = [producers[i] for i in product.input if i in producers and own_weight(producers[i])]
        if len(ups) != 1 or readers[ups[0].output[0]] != 1:
            continue
        pairs.append(SmoothPair(node.name, node.input[0], ups[0].input[1], node.input[1]))
    return pairs


def smoothing_scales(activation_absmax: np.ndarray, weight_rows: np.ndarray,
                     alpha: float) -> np.ndarray:
    """``s`` per channel from the activation's calibration max and the down weight's rows
    ``[N, M]``; geometric mean 1 so the overall magnitudes stay where they were."""
    x = np.maximum(activation_absmax.astype(np.float64), 1e-5)
    w = np.maximum(np.abs(weight_rows).max(axis=1).astype(np.float64), 1e-5)
    s = x**alpha / w ** (1.0 - alpha)
    return s / np.exp(np.log(s).mean())


def apply_smoothing(model: Any, pairs: list[SmoothPair], absmax: dict[str, np.ndarray],
                    alpha: float) -> dict[str, np.ndarray]:
    """Scale each pair's weights in ``model`` (in place); returns ``{activation: s}`` so
    statistics taken on the unsmoothed graph can be carried over."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    scales = {}
    for pair in pairs:
        up = numpy_helper.to_array(inits[pair.up_weight])
        down = numpy_helper.to_array(inits[pair.down_weight])
        s = smoothing_scales(absmax[pair.activation], down, alpha)
        inits[pair.up_weight].CopyFrom(numpy_helper.from_array(
            (up / s[None, :]).astype(up.dtype), pair.up_weight))
        inits[pair.down_weight].CopyFrom(numpy_helper.from_array(
            (down * s[:, None]).astype(down.dtype), pair.down_weight))
        scales[pair.activation] = s
    return scales


def smooth_groups(model: Any, groups: list[ScaleGroup], absmax: dict[str, np.ndarray],
                  alpha: float) -> dict[str, np.ndarray]:
    """SmoothQuant for each group in ``model`` (in place): ``s`` per folded channel from
    the activation's calibration max and the largest weight of that channel over the
    group's MatMuls. Returns ``{activation: s per input channel}``."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    counts = read_counts(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    scales = {}
    for group in groups:
        rows = np.concatenate([np.abs(numpy_helper.to_array(inits[w])) for w in group.weights], axis=1)
        x = absmax[group.activation]
        if group.kv_heads:  # the channels that share one value column: their loudest
            x = x.reshape(group.kv_heads, group.repeat, -1).max(axis=1).reshape(-1)
            rows = rows.reshape(group.kv_heads, group.repeat, -1, rows.shape[1])
            rows = rows.transpose(0, 2, 1, 3).reshape(x.size, -1)
        s = smoothing_scales(x, rows, alpha)
        fold_scales(model, group, s, inits, counts, nodes)
        scales[group.activation] = group.expand(s)
    return scales


def smoothed_moments(moments: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``X^T X`` of ``X / s`` from that of ``X``."""
    return moments / np.outer(s, s)


def peak_ratio(absmax: np.ndarray, s: np.ndarray | None = None) -> float:
    """Loudest channel over the median channel, before (or after dividing by ``s``)."""
    x = absmax if s is None else absmax / s
    return float(x.max() / max(np.median(x), 1e-12))
