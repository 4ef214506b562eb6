"""What ``edgeopt bench`` measured: one row per grid point, as a report section (``key``,
``title``, ``to_dict``, ``to_markdown``) so it can go into the bundle's report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from edgeopt.stats import Summary

EAGER = "pytorch-eager-fp32"


@dataclass(frozen=True)
class GridPoint:
    """One provider at one (threads, batch, sequence); latencies in ms."""

    provider: str
    threads: int
    batch: int
    seq: int
    status: str  # "ok", "skipped" (the graph cannot take this shape), "failed"
    note: str = ""
    # Set for a simulator or emulator: its timings are not the device's.
    simulated: str | None = None
    latency_ms: Summary | None = None
    eager_ms: Summary | None = None
    cold_start: dict[str, Any] | None = None

    @property
    def throughput(self) -> float | None:
        """Items per second at the median latency (batch / p50)."""
        return None if self.latency_ms is None else self.batch * 1e3 / self.latency_ms.p50

    @property
    def speedup(self) -> float | None:
        """PyTorch eager p50 over this p50; None for simulated providers."""
        if self.simulated or self.latency_ms is None or self.eager_ms is None:
            return None
        return self.eager_ms.p50 / self.latency_ms.p50

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data |= {"throughput_items_per_s": self.throughput, "speedup_vs_eager_p50": self.speedup}
        return data


@dataclass
class GridResult:
    """The whole grid for one bundle."""

    key: ClassVar[str] = "bench_grid"
    title: ClassVar[str] = "Benchmark grid (edgeopt bench)"

    bundle: str
    files: dict[str, int]
    providers: list[dict[str, Any]]
    warmup: int
    repeats: int
    machine: dict[str, Any]
    memory_method: str
    eager: dict[str, Any] = field(default_factory=dict)
    points: list[GridPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "points"}
        return data | {"points": [p.to_dict() for p in self.points]}

    def to_markdown(self) -> str:
        files = ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in self.files.items())
        lines = [f"Bundle `{self.bundle}` ({files}); {self.warmup} warm-up + {self.repeats} timed "
                 "runs per point, the variants of a point interleaved; items/s = batch / p50; "
                 f"machine: {self.machine.get('cpus')} CPUs, {self.machine.get('platform')}, "
                 f"onnxruntime {self.machine.get('onnxruntime')}.",
                 f"Cold start: session creation + first run in a fresh process. Memory: "
                 f"{self.memory_method}."]
        for p in self.providers:
            sim = f" **{p['simulated']}: timings are not device speed, no speed-up**" \
                if p.get("simulated") else ""
            lines.append(f"- {p['label']} (`{p['name']}`): {p['detail']}{sim}")
        if self.eager:
            lines.append(f"- PyTorch eager: {self.eager.get('note')}")
        lines += ["", "| provider | threads | batch | seq | p50 ms | p90 ms | p99 ms | mean ± std ms "
                  "| items/s | cold start ms | peak RSS MB (over baseline) | eager p50 ms | speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in self.points:
            lines.append(_row(p))
        return "\n".join(lines) + "\n"


def _row(p: GridPoint) -> str:
    name = p.provider + (f" ({p.simulated})" if p.simulated else "")
    head = f"| {name} | {p.threads} | {p.batch} | {p.seq} |"
    if p.latency_ms is None:
        return head + f" {p.status}: {p.note} |" + " |" * 8
    s = p.latency_ms
    cold = p.cold_start or {}
    if "error" in cold:
        cold_ms, rss = f"failed: {cold['error']}", ""
    elif cold:
        cold_ms = f"{cold['cold_start_s'] * 1e3:.1f}"
        peak, base = cold.get("peak_rss_bytes"), cold.get("baseline_rss_bytes")
        rss = "" if peak is None else f"{peak / 1e6:.0f} ({(peak - (base or 0)) / 1e6:.0f})"
    else:
        cold_ms, rss = "not measured", ""
    eager = "" if p.eager_ms is None else f"{p.eager_ms.p50:.2f}"
    speed = "" if p.speedup is None else f"{p.speedup:.2f}x"
    return (f"{head} {s.p50:.3f} | {s.p90:.3f} | {s.p99:.3f} | {s.mean:.3f} ± {s.std:.3f} | "
            f"{p.throughput:.1f} | {cold_ms} | {rss} | {eager} | {speed} |")
