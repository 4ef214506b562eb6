"""Summary statistics on samples whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeopt.stats import Summary, mean, percentile, std


def test_percentiles_of_one_to_five():
    # ranks 0..4; p90 sits at rank 3.6 (4 + 0.6 * 1), p99 at 3.96
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 90) == pytest.approx(4.6)
    assert percentile(samples, 99) == pytest.approx(4.96)
    assert percentile(samples, 0) == 1.0 and percentile(samples, 100) == 5.0


def test_mean_and_population_std():
    assert mean([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == 5.0
    assert std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == 2.0  # the textbook example
    assert std([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(math.sqrt(2.0))
    assert std([3.0]) == 0.0


def test_percentiles_agree_with_numpy_on_an_even_count():
    samples = [0.7, 0.1, 0.4, 0.9, 0.3, 0.2]
    for q in (10, 50, 90, 99):
        assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))
    assert percentile(samples, 50) == pytest.approx(0.35)  # between 0.3 and 0.4


def test_summary_and_scaling():
    s = Summary.of([0.001, 0.002, 0.003])
    assert (s.p50, s.min, s.max, s.n) == (0.002, 0.001, 0.003, 3)
    ms = s.scaled(1e3)
    assert ms.p50 == pytest.approx(2.0) and ms.std == pytest.approx(1e3 * s.std) and ms.n == 3


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        mean([])
