"""Parity validation: the compiled graph against the original PyTorch model, on real text.

Every gate is checked and every failure collected before anything is raised, so a
failed compile names all broken metrics at once. The caller decides what a failure
means (exit 1, or keep the bundle with ``--no-fail-on-parity``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError
from edgeopt.evaldata import EvalData
from edgeopt.metrics import output_metrics
from edgeopt.recipe import Gates
from edgeopt.runtime import make_session, run_one
from edgeopt.tasks import EncoderTask

# gate field -> (metric name, "min" means metric >= threshold, "max" means <=)
GATE_METRICS: dict[str, tuple[str, str]] = {
    "min_label_agreement": ("label_agreement", "min"),
    "max_accuracy_drop": ("accuracy_drop", "max"),
    "min_cosine_min": ("cosine_min", "min"),
    "min_cosine_mean": ("cosine_mean", "min"),
    "min_sqnr_db": ("sqnr_db", "min"),
    "max_abs_error": ("max_abs_error", "max"),
    "max_perplexity_ratio": ("perplexity_ratio", "max"),
    "min_token_agreement": ("token_agreement", "min"),
    "min_prefill_cosine": ("prefill_cosine_min", "min"),
}


@dataclass
class GateCheck:
    gate: str
    metric: str
    threshold: float
    value: float | None
    passed: bool | None  # None: metric not measurable on this data (e.g. no labels)

    def describe(self) -> str:
        op = ">=" if GATE_METRICS[self.gate][1] == "min" else "<="
        if self.value is None:
            return f"{self.metric} not measured (needs labelled data)"
        return f"{self.metric} {self.value:.4f} (gate {op} {self.threshold:g})"


@dataclass
class ParityResult:
    rows: int
    source: str
    metrics: dict[str, float]
    checks: list[GateCheck] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [c.describe() for c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "source": self.source, "passed": self.passed,
                "metrics": self.metrics, "gates": [asdict(c) for c in self.checks]}


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


def batched_outputs(
    task: EncoderTask, data: EvalData, run: Any, batch_size: int = 32, max_length: int = 128
) -> np.ndarray:
    """Outputs for every row, batching rows of similar length to limit padding."""
    lengths = [len(t) for t in data.texts]
    order = np.argsort(lengths, kind="stable")
    chunks = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        feeds = task.encode([data.texts[i] for i in idx], max_length=max_length)
        chunks.append(run(feeds))
    out = np.concatenate(chunks, axis=0)
    result = np.empty_like(out)
    result[order] = out
    return result


def reference_outputs(task: EncoderTask, data: EvalData) -> np.ndarray:
    """The original PyTorch model's outputs (computed once per compile)."""
    return batched_outputs(task, data, task.torch_outputs)


def validate_encoder(
    task: EncoderTask,
    onnx_path: Path,
    data: EvalData,
    reference: np.ndarray,
    gates: Gates,
    threads: int = 2,
    disabled_optimizers: tuple[str, ...] = (),
) -> ParityResult:
    """Run the ONNX graph on ``data`` and judge it against ``reference``."""
    _check_labels(task, data)
    session = make_session(onnx_path, threads=threads, disabled_optimizers=disabled_optimizers)
    candidate = batched_outputs(task, data, lambda feeds: run_one(session, feeds))
    metrics = output_metrics(reference, candidate)
    metrics.update(task.task_metrics(reference, candidate, data.labels))
    return ParityResult(len(data), data.source, metrics, check_gates(metrics, gates))


def _check_labels(task: EncoderTask, data: EvalData) -> None:
    if data.labels is None:
        return
    names = task.src.label_names
    if task.src.task != "text-classification":
        return
    n = len(names) if names else int(task.src.config.get("num_labels", 2))
    bad = np.flatnonzero((data.labels < 0) | (data.labels >= n))
    if bad.size:
        raise DataError(f"{data.source}: label {int(data.labels[bad[0]])} in data row {bad[0] + 1} "
                        f"is outside the model's {n} labels")
