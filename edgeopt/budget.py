"""Accuracy budgets: keep the layers quantization hurts most in higher precision until
the compiled model is within the budget on the eval data.

1. Sensitivity, measured once on calibration rows (not the eval rows the budget is
   judged on): :func:`edgeopt.sensitivity.unit_sqnr` gives each unit of quantized nodes
   (see :class:`~edgeopt.quant.registry.Candidate`) the SQNR of its outputs when it is
   fed exact inputs: the error it adds by itself, input quantization included.
2. Search: keep the k most sensitive units (``config.with_kept``: 16-bit activations
   for static INT8 with 8-bit activations, float otherwise), quantize again (static
   INT8 reuses its calibration ranges) and validate on the eval data. k doubles from 1
   until every gate holds, then bisects down to the smallest k that holds. Each step
   is deterministic, so the same inputs keep the same nodes.

Bisection assumes keeping more never hurts; it is a heuristic, and the model returned is
always one that was validated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.diagnosis import layer_of
from edgeopt.gates import ParityResult
from edgeopt.quant.registry import QuantContext, budget_candidates, quantize
from edgeopt.recipe import AccuracyBudget
from edgeopt.runtime import conform_feeds, fixed_input_shape

# Judges one compiled model on the eval data (every gate, the budget's included).
Evaluate = Callable[[OnnxArtifact], ParityResult]

SENSITIVITY_BATCHES = 4  # of the calibration batches (16 rows each): 64 rows


@dataclass(frozen=True)
class Sensitivity:
    """One unit of quantized nodes and the lowest own SQNR among its tensors."""

    nodes: tuple[str, ...]
    op: str
    layer: int | None
    sqnr_db: float  # its outputs' SQNR fed exact inputs; nan: not measured (ranked last)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = self.sqnr_db if math.isfinite(self.sqnr_db) else None
        return d


@dataclass(frozen=True)
class Trial:
    """One validated candidate: the k most sensitive units kept."""

    kept_units: int
    passed: bool
    metrics: dict[str, float]
    size_bytes: int


@dataclass
class BudgetResult:
    """What the search kept, what it cost, and the model and parity it ends with (a
    report section)."""

    key: ClassVar[str] = "budget"
    title: ClassVar[str] = "Accuracy budget"

    budget: AccuracyBudget
    precision: str
    met: bool
    ranking: tuple[Sensitivity, ...]
    kept: tuple[Sensitivity, ...]
    trials: tuple[Trial, ...]
    artifact: OnnxArtifact
    parity: ParityResult
    size_before: int
    seconds: float
    # The final model's size, read now: the work folder is gone when the report is written.
    size_after: int = 0
    # Filled in after the benchmark: p50 of the all-INT8 model and of the final one.
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def kept_nodes(self) -> tuple[str, ...]:
        return tuple(n for s in self.kept for n in s.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": asdict(self.budget), "met": self.met, "precision": self.precision,
            "kept_nodes": list(self.kept_nodes), "kept": [s.to_dict() for s in self.kept],
            "size_bytes": {"before": self.size_before, "after": self.size_after},
            "latency_p50_ms": self.latency_ms,
            "trials": [asdict(t) for t in self.trials],
            "ranking": [s.to_dict() for s in self.ranking[:20]],
            "candidates": len(self.ranking), "seconds": self.seconds,
        }

    def to_markdown(self) -> str:
        b = self.budget
        asked = " and ".join(x for x in (
            f"accuracy drop <= {b.max_accuracy_drop:g}" if b.max_accuracy_drop is not None else "",
            f"agreement >= {b.min_agreement:g}" if b.min_agreement is not None else "") if x)
        if not self.kept:
            head = "held with every node quantized; nothing kept" if self.met else \
                "not met, and nothing could be kept"
        else:
            verdict = "met" if self.met else "NOT met even"
            head = (f"{verdict} with {len(self.kept_nodes)} of "
                    f"{sum(len(s.nodes) for s in self.ranking)} quantized nodes kept in "
                    f"{self.precision} ({len(self.kept)} of {len(self.ranking)} units)")
        after = self.size_after
        lines = [f"Budget {asked}: **{head}**.", "",
                 f"- size: {self.size_before / 1e6:.2f} MB -> {after / 1e6:.2f} MB "
                 f"({(after - self.size_before) / 1e6:+.2f} MB)"]
        if {"before", "after"} <= self.latency_ms.keys():
            before, now = self.latency_ms["before"], self.latency_ms["after"]
            lines.append(f"- CPU latency p50: {before:.2f} ms -> {now:.2f} ms "
                         f"({(now / before - 1) * 100:+.1f}%), measured side by side below")
        if self.ranking:
            lines.append(f"- sensitivity: SQNR of each unit's outputs fed exact inputs, on "
                         f"{SENSITIVITY_BATCHES * 16} calibration rows; lowest first")
        if self.kept:
            lines += ["", "| kept | op | layer | SQNR dB | nodes |", "|---:|---|---:|---:|---|"]
            for i, s in enumerate(self.kept, 1):
                lines.append(f"| {i} | {s.op} | {'' if s.layer is None else s.layer} "
                             f"| {_db(s.sqnr_db)} | {', '.join(f'`{n}`' for n in s.nodes)} |")
        metric_names = sorted({k for t in self.trials for k in t.metrics})
        lines += ["", "| units kept | " + " | ".join(metric_names) + " | MB | gates |",
                  "|---:|" + "---:|" * len(metric_names) + "---:|---|"]
        for t in self.trials:
            values = " | ".join(f"{t.metrics[m]:.4f}" if m in t.metrics else "" for m in metric_names)
            lines.append(f"| {t.kept_units} | {values} | {t.size_bytes / 1e6:.2f} "
                         f"| {'pass' if t.passed else 'fail'} |")
        return "\n".join(lines) + "\n"


def _db(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "exact" if v > 0 else "-inf"
    return f"{v:.1f}"


# Metrics a trial table shows (the budget's and the usual task ones).
_SHOWN = ("accuracy_drop", "label_agreement", "cosine_min", "sqnr_db")


def fit_budget(
    budget: AccuracyBudget, *, config: Any, optimized: OnnxArtifact, quantized: OnnxArtifact,
    parity: ParityResult, evaluate: Evaluate, context: QuantContext, workdir: Path,
    record: PassRecord,
) -> BudgetResult:
    """Keep the fewest, most sensitive units in higher precision so that ``evaluate``
    passes; ``quantized`` and ``parity`` are the plain quantized model and its result."""
    started = time.perf_counter()

    def trial(k: int, art: OnnxArtifact, par: ParityResult) -> Trial:
        shown = {m: v for m, v in par.metrics.items() if m in _SHOWN and math.isfinite(v)}
        return Trial(k, par.passed, shown, art.size_bytes)

    trials = [trial(0, quantized, parity)]
    if parity.passed:
        record.notes["kept_nodes"] = 0
        return BudgetResult(budget, config.kept_precision, True, (), (), tuple(trials), quantized,
                            parity, quantized.size_bytes, time.perf_counter() - started,
                            quantized.size_bytes)
    ranking = rank_sensitivity(optimized, quantized, config, context)
    record.notes["candidates"] = len(ranking)
    results: dict[int, tuple[OnnxArtifact, ParityResult]] = {0: (quantized, parity)}

    def holds(k: int) -> bool:
        if k not in results:
            kept = tuple(n for s in ranking[:k] for n in s.nodes)
            sub = PassRecord(name=f"budget-keep-{k}", config={})
            art = quantize(optimized, config.with_kept(kept), workdir / f"keep-{k}", sub, context)
            par = evaluate(art)
            results[k] = (art, par)
            trials.append(trial(k, art, par))
        return results[k][1].passed

    lo, hi, k = 0, None, 1
    while ranking and hi is None:
        k = min(k, len(ranking))
        if holds(k):
            hi = k
        elif k == len(ranking):
            break
        else:
            lo, k = k, k * 2
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if holds(mid) else (mid, hi)
    final = hi if hi is not None else max(results)
    art, par = results[final]
    record.notes["kept_nodes"] = sum(len(s.nodes) for s in ranking[:final])
    record.notes["kept"] = [n for s in ranking[:final] for n in s.nodes]
    record.notes["precision"] = config.kept_precision
    record.notes["trials"] = len(trials) - 1
    record.notes["met"] = hi is not None
    return BudgetResult(budget, config.kept_precision, hi is not None, tuple(ranking),
                        tuple(ranking[:final]), tuple(sorted(trials, key=lambda t: t.kept_units)),
                        art, par, quantized.size_bytes, time.perf_counter() - started,
                        art.size_bytes)


def rank_sensitivity(optimized: OnnxArtifact, quantized: OnnxArtifact, config: Any,
                     context: QuantContext) -> list[Sensitivity]:
    """Units the budget may keep, most sensitive first (ties: graph order)."""
    from edgeopt.sensitivity import unit_sqnr

    units = budget_candidates(optimized.path, config)
    feeds = list(context.calibration[:SENSITIVITY_BATCHES])
    shape = fixed_input_shape(quantized.path)
    if shape is not None:
        feeds = conform_feeds(feeds, shape)
    scores = unit_sqnr(optimized.path, quantized.path, units, feeds)
    ranked = []
    for order, (unit, db) in enumerate(zip(units, scores, strict=True)):
        layer = next((layer_of(n) for n in unit.nodes if layer_of(n) is not None), None)
        ranked.append((math.inf if math.isnan(db) else db, order,
                       Sensitivity(unit.nodes, unit.op, layer, db)))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in ranked]
