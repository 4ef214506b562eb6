"""Second moments of MatMul inputs on real data: the ``X^T X`` that data-aware weight
quantization weighs its rounding errors by.

The float graph runs on the calibration feeds with the chosen activations exposed as
extra outputs. One ``K x K`` matrix per distinct input: the projections that read the
same activation (q, k and v; gate and up) share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError


def second_moments(model_path: Path, tensors: Sequence[str],
                   feeds: Sequence[dict[str, np.ndarray]], threads: int = 0) -> dict[str, np.ndarray]:
    """``{tensor: [K, K]}`` = mean over rows of ``x x^T`` for each float activation
    ``tensor`` (last axis K) of the graph at ``model_path``, over every row of every feed."""
    import onnx
    import onnxruntime as ort

    if not feeds:
        raise DataError("data-aware quantization needs calibration rows; pass --calibration-data "
                        "FILE or eval data")
    model = onnx.load(str(model_path))
    declared = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in declared:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # The exposed tensors must keep their float-graph meaning: no fusions across them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    names = list(tensors)
    sums: dict[str, np.ndarray] = {}
    rows = dict.fromkeys(names, 0)
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(names, values, strict=True):
            x = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
            # float32 products per feed (BLAS), float64 running sum across feeds.
            part = (x.T @ x).astype(np.float64)
            sums[name] = part if name not in sums else sums[name] + part
            rows[name] += x.shape[0]
    return {name: sums[name] / max(rows[name], 1) for name in names}


def weight_inputs(model: Any, nodes: Sequence[str]) -> dict[str, str]:
    """``{node name: its activation input}`` for the named MatMul nodes of ``model``."""
    wanted = set(nodes)
    return {n.name: n.input[0] for n in model.graph.node if n.name in wanted}
