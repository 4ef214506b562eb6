"""The statistics ``edgeopt verify`` reports: how far one platform's outputs are from a
reference's on the same inputs, and which thresholds that breaks."""

from __future__ import annotations

import numpy as np

from edgeopt.families import TEXT_CLASSIFICATION, TEXT_GENERATION
from edgeopt.metrics import label_agreement, row_cosine, sqnr_db


def compare_outputs(task: str, ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Agreement of ``cand`` with ``ref``: one row per input (encoders) or per position
    ``[positions, vocab]`` (causal LMs, whose arg-max is the greedy next token)."""
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {cand.shape}")
    cos = row_cosine(ref, cand)
    out = {"max_abs_error": float(np.abs(ref.astype(np.float64) - cand).max()),
           "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
           "sqnr_db": sqnr_db(ref, cand)}
    if task in (TEXT_CLASSIFICATION, TEXT_GENERATION):
        key = "label_agreement" if task == TEXT_CLASSIFICATION else "next_token_agreement"
        out[key] = label_agreement(ref, cand)
        out["disagreeing"] = float(int((ref.argmax(-1) != cand.argmax(-1)).sum()))
    return out


def judge(task: str, vs_x86: dict[str, float], min_agreement: float, min_cosine: float
          ) -> tuple[dict[str, float], list[str]]:
    """Thresholds on the arm64-vs-x86 metrics and the ones broken. A causal LM is judged
    on logit cosine; its next-token agreement is reported (near-ties flip on any kernel)."""
    checks = {"cosine_min": min_cosine}
    if task == TEXT_CLASSIFICATION:
        checks = {"label_agreement": min_agreement}
    failures = [f"{k} {vs_x86[k]:.4f} < {v}" for k, v in checks.items() if not vs_x86[k] >= v]
    return checks, failures
