"""Split the few outlier input channels of a MatMul off into a small float MatMul.

Transformer activations have a handful of channels whose magnitude is tens of times the
rest; a per-tensor dynamic INT8 scale sized for them crushes every other channel. The
channels are static (they come from LayerNorm weights), so a calibration run finds them
once and the graph computes them apart, as in LLM.int8():

    X --MatMul(W)--> Y
becomes
    X --Mul(mask)---------MatMul(W)  [quantized]--+--Add--> Y
    X --Gather(C, axis=-1)--MatMul(W[C, :]) [fp32]-+

where C holds the outlier channels and ``mask`` zeroes them in the quantized path. The
float side is K=|C| wide (a few channels), so it costs little time and size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.probe import probe_session


@dataclass(frozen=True)
class SplitResult:
    """What was split: channels per MatMul, and the float side nodes to keep unquantized."""

    channels: dict[str, list[int]]
    float_nodes: tuple[str, ...]


def activation_absmax(
    path: Path, tensors: list[str], feeds: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of ``tensors`` over the calibration feeds."""
    if not tensors:  # onnxruntime reads an empty output list as "every output"
        return {}
    session = probe_session(path, tensors)
    inputs = {i.name for i in session.get_inputs()}
    absmax: dict[str, np.ndarray] = {}
    for feed in feeds:
        outs = session.run(tensors, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, outs, strict=True):
            # Padded positions count: they flow through the MatMul too and, under dynamic
            # quantization, set the per-tensor scale just like real tokens.
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            absmax[name] = np.maximum(absmax[name], peak) if name in absmax else peak
    return absmax


def split_outliers(
    model: Any, calib_model_path: Path, feeds: list[dict[str, np.ndarray]], threshold: float,
    max_channels: int,
) -> SplitResult:
    """Rewrite ``model`` (a fresh onnx.ModelProto owned by the caller) in place.

    A channel is an outlier when its calibration max |x| exceeds ``threshold`` times the
    median over channels; at most ``max_channels`` per MatMul, the largest first.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    targets = [n for n in model.graph.node
               if n.op_type == "MatMul" and n.input[1] in inits
               and numpy_helper.to_array(inits[n.input[1]]).ndim == 2]
    if not targets or not feeds:
        return SplitResult({}, ())
    absmax = activation_absmax(calib_model_path, sorted({n.input[0] for n in targets}), feeds)
    channels: dict[str, list[int]] = {}
    float_nodes: list[str] = []
    added = []
    for i, node in enumerate(targets):
        amax = absmax[node.input[0]]
        outliers = np.flatnonzero(amax > threshold * np.median(amax))
        outliers = outliers[np.argsort(amax[outliers])[::-1][:max_channels]]
        if outliers.size == 0:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[outliers] = 0.0
        tag = f"outlier_split_{i}"
        model.graph.initializer.extend([
            numpy_helper.from_array(mask, f"{tag}_mask"),
            numpy_helper.from_array(outliers.astype(np.int64), f"{tag}_channels"),
            numpy_helper.from_array(np.ascontiguousarray(weight[outliers]), f"{tag}_weight"),
        ])
        x, y = node.input[0], node.output[0]
        node.input[0], node.output[0] = f"{tag}_x_clean", f"{tag}_y_main"
        added += [
            helper.make_node("Mul", [x, f"{tag}_mask"], [f"{tag}_x_clean"], name=f"{tag}_mask_mul"),
            helper.make_node("Gather", [x, f"{tag}_channels"], [f"{tag}_x_out"], axis=-1,
                             name=f"{tag}_gather"),
            helper.make_node("MatMul", [f"{tag}_x_out", f"{tag}_weight"], [f"{tag}_y_out"],
                             name=f"{tag}_float_matmul"),
            helper.make_node("Add", [f"{tag}_y_main", f"{tag}_y_out"], [y], name=f"{tag}_add"),
        ]
        float_nodes += [f"{tag}_gather", f"{tag}_float_matmul"]
        channels[node.name] = [int(c) for c in outliers]
    if added:
        model.graph.node.extend(added)
        _topological_sort(model)
    return SplitResult(channels, tuple(float_nodes))


def _topological_sort(model: Any) -> None:
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel(model).topological_sort()
