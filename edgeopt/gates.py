"""Parity gates, declared once: each gate field names the metric it judges, whether the
metric must stay above (``min``) or below (``max``) it, and the values it may take.
Recipes, the CLI's ``--gate``, accuracy budgets and both validators read this table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeopt.errors import RecipeError


def _gate(metric: str, kind: str, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=None, metadata={"metric": metric, "kind": kind, "range": (lo, hi)})


@dataclass(frozen=True)
class Gates:
    """Parity gates; ``None`` means the metric is reported but not gated."""

    min_label_agreement: float | None = _gate("label_agreement", "min", -1.0, 1.0)
    max_accuracy_drop: float | None = _gate("accuracy_drop", "max", 0.0)
    min_cosine_min: float | None = _gate("cosine_min", "min", -1.0, 1.0)
    min_cosine_mean: float | None = _gate("cosine_mean", "min", -1.0, 1.0)
    min_sqnr_db: float | None = _gate("sqnr_db", "min")
    max_abs_error: float | None = _gate("max_abs_error", "max", 0.0)
    # Decoders: perplexity of the bundle over the original's, teacher-forced next-token
    # agreement, and the minimum per-position cosine of the prefill logits.
    max_perplexity_ratio: float | None = _gate("perplexity_ratio", "max")
    min_token_agreement: float | None = _gate("token_agreement", "min", -1.0, 1.0)
    min_prefill_cosine: float | None = _gate("prefill_cosine_min", "min", -1.0, 1.0)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise RecipeError(f"gates.{f.name} must be a number")
            lo, hi = f.metadata["range"]
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                bounds = f"within [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
                raise RecipeError(f"gates.{f.name} must be {bounds}, got {v}")


# gate field -> (metric name, "min": metric >= threshold, "max": metric <= threshold)
GATE_METRICS: dict[str, tuple[str, str]] = {
    f.name: (f.metadata["metric"], f.metadata["kind"]) for f in dataclasses.fields(Gates)}


@dataclass
class GateCheck:
    """One gate judged on one metric; ``passed`` None: not measurable on this data."""

    gate: str
    metric: str
    threshold: float
    value: float | None
    passed: bool | None

    def describe(self) -> str:
        op = ">=" if GATE_METRICS[self.gate][1] == "min" else "<="
        if self.value is None:
            return f"{self.metric} not measured (needs labelled data)"
        return f"{self.metric} {self.value:.4f} (gate {op} {self.threshold:g})"


def check_gates(metrics: dict[str, float], gates: Gates) -> list[GateCheck]:
    """Compare metrics with every gate that is set."""
    checks = []
    for gate, (metric, kind) in GATE_METRICS.items():
        threshold = getattr(gates, gate)
        if threshold is None:
            continue
        value = metrics.get(metric)
        if value is None:
            checks.append(GateCheck(gate, metric, threshold, None, None))
            continue
        ok = value >= threshold if kind == "min" else value <= threshold + 1e-12
        checks.append(GateCheck(gate, metric, threshold, value, bool(ok)))
    return checks


@dataclass
class ParityResult:
    """Metrics of one validation run and every gate judged on them."""

    rows: int
    source: str
    metrics: dict[str, float]
    checks: list[GateCheck] = field(default_factory=list)
    # What the outputs were compared with.
    reference: str = "original PyTorch fp32"
    # Per eval row, in data order: "cosine", "max_abs_error", "agreement" (the report's
    # histograms); empty when the validator does not keep them.
    per_row: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [c.describe() for c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        out = {"rows": self.rows, "source": self.source, "reference": self.reference,
               "passed": self.passed, "metrics": self.metrics,
               "gates": [asdict(c) for c in self.checks]}
        if self.per_row:
            out["per_row"] = self.per_row
        return out
