"""Raw worker figures turned into the table: decode rate statistics and quality against
the PyTorch fp32 reference."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def spread(samples: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and IQR (inclusive quartiles, so 2 samples still have a spread)."""
    if len(samples) == 1:
        q1 = med = q3 = samples[0]
    else:
        q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "min": min(samples),
            "max": max(samples), "runs": len(samples)}


def quality(scores: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Perplexity, its ratio to the reference's, and top-1 agreement with the reference's
    argmax at every scored position (teacher-forced on the same windows)."""
    positions = sum(len(a) for a in reference["argmax"])
    ppl = math.exp(sum(scores["nll"]) / positions)
    ppl_ref = math.exp(sum(reference["nll"]) / positions)
    same = sum(int(a == b) for row, ref in zip(scores["argmax"], reference["argmax"], strict=True)
               for a, b in zip(row, ref, strict=True))
    return {"perplexity": ppl, "perplexity_reference": ppl_ref, "perplexity_ratio": ppl / ppl_ref,
            "top1_agreement": same / positions, "positions": positions}


def summarize(raw: dict[str, dict[str, Any]], reference: str, baseline: str | None) -> list[dict[str, Any]]:
    """One row per variant; ``baseline`` (the fp32 ONNX) is what ``x_fp32_onnx`` divides by."""
    ref = raw[reference]
    rows = []
    for name, r in raw.items():
        decode = spread([run["decode_steps"] / run["decode_s"] for run in r["runs"]])
        prefill = spread([run["prefill_s"] * 1e3 for run in r["runs"]])
        ref_tokens = {run["prompt"]: run["tokens"] for run in ref["runs"]}
        match = [_common_prefix(run["tokens"], ref_tokens[run["prompt"]]) for run in r["runs"]]
        rows.append({"variant": name, "runtime": r["load"].get("runtime"),
                     "file_mb": r["load"]["file_bytes"] / 1e6,
                     "decode_tokens_per_s": decode, "time_to_first_token_ms": prefill,
                     "peak_rss_mb": r["memory"]["peak_rss_bytes"] / 1e6,
                     "greedy_prefix_match_mean": statistics.fmean(match),
                     **quality(r["scores"], ref["scores"])})
    base = next((row for row in rows if row["variant"] == baseline), None)
    for row in rows:
        row["x_fp32_onnx"] = (row["decode_tokens_per_s"]["median"] / base["decode_tokens_per_s"]["median"]
                              if base else None)
    return rows


def markdown(rows: Sequence[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| variant | decode tok/s | × fp32 ONNX | perplexity ratio | top-1 agreement | "
             "peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        d = row["decode_tokens_per_s"]
        x = "" if row["x_fp32_onnx"] is None else f"{row['x_fp32_onnx']:.2f}"
        lines.append(f"| {row['variant']} | {d['median']:.1f} (IQR {d['iqr']:.1f}) | {x} | "
                     f"{row['perplexity_ratio']:.4f} | {100 * row['top1_agreement']:.1f}% | "
                     f"{row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
