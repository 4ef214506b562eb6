"""Statistics of MatMul inputs on real data, from one run of the float graph over the
calibration feeds with the chosen activations exposed as extra outputs:

- second moments ``X^T X``, which data-aware weight quantization weighs its rounding
  errors by. One ``K x K`` matrix per distinct input: the projections that read the
  same activation (q, k and v; gate and up) share it;
- per-channel absolute maxima, which activation smoothing divides by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError
from edgeopt.probe import probe_session


@dataclass
class InputStats:
    """``moments[t]``: [K, K] mean over rows of ``x x^T``; ``absmax[t]``: [K] max of ``|x|``."""

    moments: dict[str, np.ndarray] = field(default_factory=dict)
    absmax: dict[str, np.ndarray] = field(default_factory=dict)


def input_stats(model_path: Path, moments_of: Sequence[str], absmax_of: Sequence[str],
                feeds: Sequence[dict[str, np.ndarray]], threads: int = 0) -> InputStats:
    """Second moments of the float activations ``moments_of`` and channel maxima of
    ``absmax_of`` (last axis K) in the graph at ``model_path``, over every row of every feed."""
    names = sorted({*moments_of, *absmax_of})
    stats = InputStats()
    if not names:
        return stats
    if not feeds:
        raise DataError("data-aware quantization (gptq, activation smoothing) needs calibration "
                        "rows; pass --calibration-data FILE or eval data")
    # The exposed tensors keep their float-graph meaning: probes run with no fusions.
    session = probe_session(model_path, names, threads=threads)
    inputs = {i.name for i in session.get_inputs()}
    wanted_moments, wanted_max = set(moments_of), set(absmax_of)
    rows = dict.fromkeys(names, 0)
    for feed in feeds:
        values = session.run(names, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(names, values, strict=True):
            x = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
            rows[name] += x.shape[0]
            if name in wanted_moments:
                # float32 products per feed (BLAS), float64 running sum across feeds.
                part = (x.T @ x).astype(np.float64)
                stats.moments[name] = stats.moments.get(name, 0.0) + part
            if name in wanted_max:
                peak = np.abs(x).max(axis=0)
                stats.absmax[name] = np.maximum(stats.absmax.get(name, peak), peak)
    for name in wanted_moments:
        stats.moments[name] = stats.moments[name] / max(rows[name], 1)
    return stats


def weight_inputs(model: Any, nodes: Sequence[str]) -> dict[str, str]:
    """``{node name: its activation input}`` for the named MatMul nodes of ``model``."""
    wanted = set(nodes)
    return {n.name: n.input[0] for n in model.graph.node if n.name in wanted}
