"""Teacher-forced scoring of one window from its logits (numpy; both venvs have it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def score_logits(logits: np.ndarray, ids: Sequence[int]) -> dict[str, Any]:
    """Summed NLL of ``ids[1:]`` under ``logits[:-1]`` (float64) and each position's argmax.

    ``logits`` is [T, vocab] for the T tokens of ``ids``.
    """
    x = np.asarray(logits[:-1], dtype=np.float64)
    target = np.asarray(ids[1:], dtype=np.int64)
    peak = x.max(-1)
    lse = peak + np.log(np.exp(x - peak[:, None]).sum(-1))
    nll = float((lse - x[np.arange(len(x)), target]).sum())
    return {"nll": nll, "argmax": x.argmax(-1).astype(int).tolist()}


def score_windows(logits_of: Any, windows: Sequence[Sequence[int]]) -> dict[str, Any]:
    """``score_logits`` over every window; ``logits_of(ids)`` returns [T, vocab]."""
    scored = [score_logits(logits_of(list(w)), w) for w in windows]
    return {"nll": [s["nll"] for s in scored], "argmax": [s["argmax"] for s in scored]}
