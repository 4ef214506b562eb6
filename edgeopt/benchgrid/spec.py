"""The grid ``edgeopt bench`` times: every provider x threads x batch x sequence."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from edgeopt.errors import UsageError


def parse_ints(flag: str, text: str) -> tuple[int, ...]:
    """``"1,8"`` -> ``(1, 8)``: positive, each once, in the order given."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give comma-separated whole numbers, e.g. 1,8") from None
    if not values or min(values) < 1:
        raise UsageError(f"{flag} {text!r}: give one or more numbers >= 1, e.g. 1,8")
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class GridSpec:
    """What to time and how often: ``warmup`` untimed calls, then ``repeats`` timed ones per
    grid point (variants interleaved), a fresh process per point for cold start and peak
    memory unless ``cold_start`` is off, and PyTorch eager beside it unless ``eager`` is."""

    providers: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8)
    sequences: tuple[int, ...] = (32, 128)
    warmup: int = 5
    repeats: int = 30
    cold_start: bool = True
    # Time the source model in PyTorch eager beside the bundle when it is at hand.
    eager: bool = True

    def __post_init__(self) -> None:
        if not self.providers:
            raise UsageError("--ep names no provider")
        if self.warmup < 0 or self.repeats < 3:
            raise UsageError(f"--warmup must be >= 0 and --repeats >= 3 (got {self.warmup}, "
                             f"{self.repeats}): fewer timed runs have no p90")
        for name, values in (("--threads", self.threads), ("--batch", self.batches),
                             ("--seq", self.sequences)):
            if not values or min(values) < 1:
                raise UsageError(f"{name} needs numbers >= 1")

    def shapes(self) -> Iterator[tuple[int, int, int]]:
        """``(threads, batch, sequence)`` for every point, in table order."""
        return itertools.product(self.threads, self.batches, self.sequences)
