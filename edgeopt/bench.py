"""CPU latency benchmark: variants measured side by side in one run.

Variants are timed round-robin (one call of each per round) after a warm-up, so a
slow drift of the machine hits all of them alike. Reports p50/p90/p99 and spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeopt.recipe import BenchConfig
from edgeopt.stats import Summary


@dataclass(frozen=True)
class LatencyStats:
    name: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    runs: int
    # Every timed run in ms, in run order (the report's latency distribution).
    samples_ms: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, name: str, seconds: list[float]) -> LatencyStats:
        s = Summary.of(seconds).scaled(1e3)
        # 0.1 us is far below the run-to-run spread: more digits only bloat report.json.
        samples = tuple(round(float(x) * 1e3, 4) for x in seconds)
        return cls(name, s.p50, s.p90, s.p99, s.mean, s.std, s.min, s.n, samples)


def time_samples(
    variants: dict[str, Callable[[], Any]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Warm each variant up, then time them round-robin ``repeats`` times: seconds per call."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def time_side_by_side(
    variants: dict[str, Callable[[], Any]], warmup: int, repeats: int
) -> dict[str, LatencyStats]:
    """Warm each variant up, then time them round-robin ``repeats`` times."""
    samples = time_samples(variants, warmup, repeats)
    return {name: LatencyStats.from_samples(name, s) for name, s in samples.items()}


@dataclass
class BenchResult:
    config: dict[str, Any]
    latency: dict[str, LatencyStats]
    baseline: str | None
    subject: str

    @property
    def speedup(self) -> float | None:
        """Baseline p50 over subject p50 (2.0 means twice as fast)."""
        if self.baseline is None or self.baseline not in self.latency:
            return None
        return self.latency[self.baseline].p50_ms / self.latency[self.subject].p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "subject": self.subject, "baseline": self.baseline,
                "speedup_p50": self.speedup,
                "latency": {k: asdict(v) for k, v in self.latency.items()}}


def bench_encoder(
    feeds: dict[str, np.ndarray],
    onnx_variants: dict[str, Any],
    torch_module: Any | None,
    input_names: list[str],
    config: BenchConfig,
    subject: str,
    disabled_optimizers: tuple[str, ...] = (),
) -> BenchResult:
    """Time ONNX sessions (and the PyTorch eager module) on identical inputs."""
    from edgeopt.runtime import make_session, run_one

    variants: dict[str, Callable[[], Any]] = {}
    for name, path in onnx_variants.items():
        session = make_session(path, threads=config.threads, spinning=True,
                               disabled_optimizers=disabled_optimizers)
        variants[name] = lambda s=session: run_one(s, feeds)
    baseline = None
    previous_threads = None
    if torch_module is not None and config.torch_baseline:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        args = [torch.from_numpy(feeds[n]) for n in input_names]

        def eager() -> Any:
            with torch.inference_mode():
                return torch_module(*args)

        baseline = "pytorch-eager-fp32"
        variants[baseline] = eager
    try:
        latency = time_side_by_side(variants, config.warmup, config.repeats)
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    cfg = asdict(config) | {"input_shape": list(next(iter(feeds.values())).shape),
                            "provider": "cpu"}
    return BenchResult(cfg, latency, baseline, subject)
