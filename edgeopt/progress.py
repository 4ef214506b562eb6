"""Terminal display: a live line per compile stage with its time, and the summary."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table

_STAGE_LABELS = {
    "load": "Load model",
    "export": "Export to ONNX",
    "optimize": "Graph fusions",
    "quantize": "Quantize",
    "validate": "Validate parity",
    "budget": "Accuracy budget",
    "diagnose": "Diagnose failure",
    "benchmark": "Benchmark CPU",
    "bundle": "Write bundle",
}


class StageDisplay:
    """Shows a spinner for the running stage and a tick with seconds when it ends."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)
        self._status: Any = None

    def __enter__(self) -> StageDisplay:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def on_stage(self, stage: str, state: str, seconds: float | None) -> None:
        label = _STAGE_LABELS.get(stage, stage.replace("prepare:", "Prepare: "))
        if state == "start":
            self._stop()
            self._status = self.console.status(f"{label}…")
            self._status.start()
            return
        self._stop()
        mark = "[green]✓[/green]" if state == "done" else "[red]✗[/red]"
        self.console.print(f"{mark} {label:<18} {seconds or 0.0:6.1f} s")


def print_summary(report: Any) -> None:
    """The headline figures of a report on stdout; the full report is in the bundle."""
    console = Console(highlight=False)
    style = "green" if report.passed else "red"
    console.print(f"\n[bold {style}]{report.status}[/] {report.target} ({report.task}) "
                  f"in {report.seconds:.1f} s")
    for failure in report.failures:
        console.print(f"  [red]gate failed:[/] {failure}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.parity.get("metrics", {}).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key, value in report.sizes.items():
        table.add_row(f"size: {key}", f"{value / 1e6:.2f} MB")
    if report.bench:
        for name, stats in report.bench["latency"].items():
            table.add_row(f"p50 latency: {name}", f"{stats['p50_ms']:.2f} ms")
        if report.bench.get("speedup_p50"):
            table.add_row("speed-up vs PyTorch eager", f"{report.bench['speedup_p50']:.2f}x")
    console.print(table)
    budget = report.section("budget")
    if budget is not None:
        kept = budget.kept_nodes
        verdict = "met" if budget.met else "[red]not met[/]"
        names = ", ".join(kept[:3]) + (", ..." if len(kept) > 3 else "")
        console.print(f"accuracy budget {verdict}: {len(kept)} node(s) kept in "
                      f"{budget.precision}" + (f" ({names})" if kept else ""))
    if report.bundle:
        console.print(f"bundle: {report.bundle} (report.md has the details)")
