"""Summary statistics of timing samples: percentiles, mean and spread, in plain Python.

Percentiles interpolate linearly between the two closest ranks (numpy's default,
Hyndman and Fan's type 7), so a figure here matches ``np.percentile`` on the same list.
The standard deviation is the population one (divides by n): the spread of the runs
that were taken, not an estimate for runs that were not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linear between closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("mean of no samples")
    return math.fsum(samples) / len(samples)


def std(samples: Sequence[float]) -> float:
    """Population standard deviation (divides by n)."""
    m = mean(samples)
    return math.sqrt(math.fsum((x - m) ** 2 for x in samples) / len(samples))


@dataclass(frozen=True)
class Summary:
    """p50/p90/p99, mean, std, min and max of one list of samples, in its unit."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(percentile(samples, 50), percentile(samples, 90), percentile(samples, 99),
                   mean(samples), std(samples), min(samples), max(samples), len(samples))

    def scaled(self, factor: float) -> Summary:
        """The same summary in another unit (seconds -> ms: 1e3)."""
        return Summary(*(v * factor for v in (self.p50, self.p90, self.p99, self.mean, self.std,
                                               self.min, self.max)), self.n)
