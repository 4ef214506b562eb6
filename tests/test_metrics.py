"""Numerical parity metrics."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.gates import check_gates
from edgeopt.metrics import output_metrics, row_cosine, sqnr_db
from edgeopt.recipe import Gates


def test_sqnr_of_known_noise():
    ref = np.ones((4, 10), dtype=np.float32)
    cand = ref + 0.1  # noise power 0.01 per element vs signal 1 -> 20 dB
    assert sqnr_db(ref, cand) == pytest.approx(20.0, abs=1e-3)
    assert sqnr_db(ref, ref) == float("inf")


def test_row_cosine_sees_a_flipped_row():
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = np.array([[1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(row_cosine(ref, cand), [1.0, -1.0])


def test_output_metrics_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        output_metrics(np.zeros((2, 3)), np.zeros((3, 2)))


def test_check_gates_reports_every_failure_and_unmeasured():
    metrics = {"label_agreement": 0.95, "cosine_min": 0.5, "max_abs_error": 0.1}
    gates = Gates(min_label_agreement=0.99, min_cosine_min=0.9, max_abs_error=0.5,
                  max_accuracy_drop=0.01)
    checks = {c.gate: c for c in check_gates(metrics, gates)}
    assert checks["min_label_agreement"].passed is False
    assert checks["min_cosine_min"].passed is False
    assert checks["max_abs_error"].passed is True
    assert checks["max_accuracy_drop"].passed is None  # no labels -> not measured, not failed


def test_per_row_metrics_score_each_row_and_each_rows_judged_tokens():
    from edgeopt.metrics import per_row_metrics

    ref = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    cand = np.array([[1.0, 0.0], [0.5, 2.0], [1.0, 3.0]])
    rows = per_row_metrics(ref, cand)
    assert rows["cosine"] == pytest.approx(row_cosine(ref, cand))
    assert rows["max_abs_error"].tolist() == [0.0, 0.5, 2.0]
    assert rows["agreement"].tolist() == [1.0, 1.0, 0.0]
    # Per-token outputs [rows, tokens, labels]: a row is scored on its masked tokens only.
    tokens = np.stack([ref, cand[[0, 1, 1]]])  # row 0: the rows above; row 1: agreeing tokens
    other = np.stack([cand, cand[[0, 1, 1]] + 10.0])
    mask = np.array([[True, True, False], [False, False, False]])
    rows = per_row_metrics(tokens, other, mask)
    assert rows["max_abs_error"][0] == 0.5  # the third token (error 2.0) is not judged
    assert rows["agreement"][0] == 1.0
    assert np.isnan(rows["cosine"][1]) and np.isnan(rows["agreement"][1])
