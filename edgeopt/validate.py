"""Parity validation: the compiled graph against the original PyTorch model, on real text.

Every gate is checked and every failure collected before anything is raised, so a
failed compile names all broken metrics at once. The caller decides what a failure
means (exit 1, or keep the bundle with ``--no-fail-on-parity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError
from edgeopt.evaldata import EvalData
from edgeopt.families import TEXT_CLASSIFICATION
from edgeopt.gates import Gates, ParityResult, check_gates
from edgeopt.metrics import output_metrics, per_row_metrics
from edgeopt.runtime import make_session, run_one
from edgeopt.tasks import EncoderTask


@dataclass(frozen=True)
class Outputs:
    """One model's outputs on every eval row, in data order.

    Per-token outputs are zero-padded along the sequence to the longest batch; ``mask``
    ``[rows, sequence]`` marks the tokens that are judged (None: every row is).
    """

    values: np.ndarray
    mask: np.ndarray | None = None


def batched_outputs(
    task: EncoderTask, data: EvalData, run: Any, batch_size: int = 32, max_length: int = 128
) -> Outputs:
    """Outputs for every row, batching rows of similar length to limit padding."""
    lengths = [len(t) for t in data.texts]
    order = np.argsort(lengths, kind="stable")
    chunks, masks = [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        feeds = task.encode([data.texts[i] for i in idx], max_length=max_length)
        out = run(feeds)
        mask = task.scored_tokens(feeds)
        if mask is not None:
            # A graph fixed to a longer sequence (NNAPI, QNN) returns its padding too.
            out = out[:, : mask.shape[1]]
            masks.append(mask)
        chunks.append(out)
    mask = _in_order(_pad_sequence(masks), order) if masks else None
    return Outputs(_in_order(_pad_sequence(chunks) if masks else chunks, order), mask)


def _pad_sequence(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """Batches of per-token outputs padded with zeros to the longest sequence."""
    longest = max(c.shape[1] for c in chunks)
    return [np.pad(c, [(0, 0), (0, longest - c.shape[1])] + [(0, 0)] * (c.ndim - 2))
            for c in chunks]


def _in_order(chunks: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    out = np.concatenate(chunks, axis=0)
    result = np.empty_like(out)
    result[order] = out
    return result


def reference_outputs(task: EncoderTask, data: EvalData) -> Outputs:
    """The original PyTorch model's outputs (computed once per compile)."""
    return batched_outputs(task, data, task.torch_outputs)


def onnx_outputs(task: EncoderTask, onnx_path: Path, data: EvalData, threads: int = 2) -> np.ndarray:
    """Outputs of an ONNX graph on every row: the reference when the source is a graph."""
    session = make_session(onnx_path, threads=threads)
    return batched_outputs(task, data, lambda feeds: run_one(session, feeds))


def validate_encoder(
    task: EncoderTask,
    onnx_path: Path,
    data: EvalData,
    reference: Outputs,
    gates: Gates,
    threads: int = 2,
    disabled_optimizers: tuple[str, ...] = (),
) -> ParityResult:
    """Run the ONNX graph on ``data`` and judge it against ``reference``."""
    _check_labels(task, data)
    session = make_session(onnx_path, threads=threads, disabled_optimizers=disabled_optimizers)
    candidate = batched_outputs(task, data, lambda feeds: run_one(session, feeds))
    mask = reference.mask  # the same feeds, so the same tokens as the candidate's
    if mask is not None and not mask.any():
        raise DataError(f"{data.source}: no row has a real token to judge (only padding and "
                        "special tokens); pass eval data with text")
    metrics = output_metrics(reference.values, candidate.values, mask)
    metrics.update(task.task_metrics(reference.values, candidate.values, data.labels, mask))
    rows = per_row_metrics(reference.values, candidate.values, mask)
    if "label_agreement" not in metrics:  # an arg-max of embeddings means nothing
        del rows["agreement"]
    return ParityResult(len(data), data.source, metrics, check_gates(metrics, gates),
                        per_row={k: compact(v) for k, v in rows.items()})


def compact(values: np.ndarray, digits: int = 7) -> list[float | None]:
    """Per-row values as report.json keeps them: 7 significant digits (a cosine of
    0.9999994 stays distinguishable from 1), None for a row that has no value."""
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in values.tolist()]


def _check_labels(task: EncoderTask, data: EvalData) -> None:
    if data.labels is None:
        return
    names = task.src.label_names
    if task.src.task != TEXT_CLASSIFICATION:
        return
    n = len(names) if names else int(task.src.config.get("num_labels", 2))
    bad = np.flatnonzero((data.labels < 0) | (data.labels >= n))
    if bad.size:
        raise DataError(f"{data.source}: label {int(data.labels[bad[0]])} in data row {bad[0] + 1} "
                        f"is outside the model's {n} labels")
