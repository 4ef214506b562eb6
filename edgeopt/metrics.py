"""Numerical parity metrics between a reference output and a candidate output.

Outputs with one row per input are judged on every row. Per-token outputs
``[rows, sequence, ...]`` come with a ``mask`` ``[rows, sequence]`` of the tokens that
are judged: each such token is one row of every metric, and the rest (padding, special
tokens) is never looked at.
"""

from __future__ import annotations

import numpy as np


def sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|ref|^2 / |ref - cand|^2)."""
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    noise = float(np.sum((ref64 - cand64) ** 2))
    signal = float(np.sum(ref64**2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def row_cosine(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Cosine similarity per row (last axis flattened per leading index)."""
    a = ref.reshape(ref.shape[0], -1).astype(np.float64)
    b = cand.reshape(cand.shape[0], -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(den, 1e-30)


def scored_rows(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The rows that are judged: all of them, or the masked tokens ``[tokens, ...]``."""
    if mask is None:
        return values
    if mask.shape != values.shape[:2]:
        raise ValueError(f"token mask {mask.shape} does not fit output {values.shape}")
    return values[mask.astype(bool)]


def label_agreement(ref: np.ndarray, cand: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of judged rows (or tokens) whose arg-max label is the same in both."""
    ref_pred = scored_rows(ref, mask).argmax(-1)
    cand_pred = scored_rows(cand, mask).argmax(-1)
    return float((ref_pred == cand_pred).mean()) if ref_pred.size else float("nan")


def output_metrics(
    ref: np.ndarray, cand: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """max/mean absolute error, per-row cosine (min and mean) and SQNR over judged rows."""
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    ref, cand = scored_rows(ref, mask), scored_rows(cand, mask)
    err = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    cos = row_cosine(ref, cand)
    return {
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "sqnr_db": sqnr_db(ref, cand),
    }


def per_row_metrics(
    ref: np.ndarray, cand: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Parity of each eval row: its cosine, its largest absolute error and (arg-max over
    the last axis) its label agreement. A per-token output scores a row by its judged
    tokens: the lowest cosine, the largest error, the share of tokens that agree; a row
    with no judged token gets NaN."""
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    if mask is None:
        err = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
        return {"cosine": row_cosine(ref, cand),
                "max_abs_error": err.reshape(err.shape[0], -1).max(1),
                "agreement": (ref.argmax(-1) == cand.argmax(-1)).astype(np.float64)
                .reshape(ref.shape[0], -1).mean(1)}
    out = {k: np.full(ref.shape[0], np.nan) for k in ("cosine", "max_abs_error", "agreement")}
    for i, keep in enumerate(mask.astype(bool)):
        if keep.any():
            row = per_row_metrics(ref[i][keep], cand[i][keep])
            out["cosine"][i] = row["cosine"].min()
            out["max_abs_error"][i] = row["max_abs_error"].max()
            out["agreement"][i] = row["agreement"].mean()
    return out
