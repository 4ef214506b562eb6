"""The compile report, built from the pass records, the parity result and the benchmark."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

# 2: typed ``sections`` (budget, diagnosis, decoder throughput, samples) replace ``extra``.
REPORT_VERSION = 2


class Section(Protocol):
    """A typed part of the report a stage adds (the budget search, a diagnosis, ...):
    ``key`` names it in report.json, ``title`` heads it in report.md."""

    key: ClassVar[str]
    title: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...

    def to_markdown(self) -> str: ...


@dataclass
class Report:
    """What one compile did and measured; ``report.json`` and ``report.md`` render it."""

    status: str  # "PASSED" or "FAILED"
    target: str
    task: str
    source: dict[str, Any]
    recipe: dict[str, Any]
    passes: list[dict[str, Any]]
    parity: dict[str, Any]
    bench: dict[str, Any] | None
    sizes: dict[str, int]
    versions: dict[str, str]
    seconds: float
    failures: list[str] = field(default_factory=list)
    bundle: str | None = None
    sections: list[Section] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "PASSED"

    def section(self, key: str) -> Section | None:
        """The section a stage added under ``key``, or None."""
        return next((s for s in self.sections if s.key == key), None)

    def add(self, section: Section) -> None:
        """Add (or replace) the section under ``section.key``."""
        self.sections = [s for s in self.sections if s.key != section.key] + [section]

    def to_dict(self) -> dict[str, Any]:
        return {"report_version": REPORT_VERSION, **{
            k: getattr(self, k) for k in (
                "status", "target", "task", "failures", "bundle", "source", "sizes", "parity",
                "bench", "passes", "recipe", "versions", "seconds")},
            "sections": {s.key: s.to_dict() for s in self.sections}}

    def to_json(self) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
        # Per-row parity and latency samples: one line per list, not one per number.
        return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ")
                                + "]", text)

    def to_markdown(self) -> str:
        lines = [f"# edgeopt report: {self.status}", ""]
        lines += [f"- target: `{self.target}`; task: `{self.task}`",
                  f"- source: `{self.source.get('path')}` ({self.source.get('architecture')}), "
                  f"weights sha256 `{str(self.source.get('weights_sha256'))[:16]}…`",
                  f"- compile time: {self.seconds:.1f} s"]
        adapter = self.source.get("adapter")
        if adapter:
            lines.insert(-1, f"- LoRA adapter merged: `{adapter['path']}` (r {adapter['r']}, alpha "
                             f"{adapter['lora_alpha']}), weights sha256 "
                             f"`{str(adapter['weights_sha256'])[:16]}…`")
        if self.bundle:
            lines.append(f"- bundle: `{self.bundle}`")
        if self.failures:
            lines += ["", "## Failed gates", ""] + [f"- {f}" for f in self.failures]
        lines += ["", "## Size", "", "| artifact | MB |", "|---|---:|"]
        lines += [f"| {k} | {v / 1e6:.2f} |" for k, v in self.sizes.items()]
        lines += self._parity_md() + self._bench_md() + self._passes_md()
        for section in self.sections:
            lines += ["", f"## {section.title}", "", section.to_markdown()]
        return "\n".join(lines) + "\n"

    def _parity_md(self) -> list[str]:
        p = self.parity
        lines = ["", "## Parity", "",
                 f"{p.get('rows')} rows from {p.get('source')}; reference: "
                 f"{p.get('reference', 'original PyTorch fp32')}.",
                 "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in p.get("metrics", {}).items()]
        gates = p.get("gates", [])
        if gates:
            lines += ["", "| gate | threshold | value | result |", "|---|---:|---:|---|"]
            for g in gates:
                result = {True: "pass", False: "FAIL", None: "not measured"}[g["passed"]]
                lines.append(f"| {g['gate']} | {g['threshold']:g} | {_fmt(g['value'])} | {result} |")
        return lines

    def _bench_md(self) -> list[str]:
        if not self.bench:
            return []
        cfg = self.bench["config"]
        lines = ["", "## CPU latency", "",
                 f"batch {cfg['batch']}, input shape {cfg['input_shape']}, {cfg['threads']} "
                 f"threads, {cfg['warmup']} warm-up + {cfg['repeats']} timed runs per variant, "
                 "round-robin in one run.", "",
                 "| variant | p50 ms | p90 ms | p99 ms | std ms |", "|---|---:|---:|---:|---:|"]
        for name, s in self.bench["latency"].items():
            lines.append(f"| {name} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} "
                         f"| {s['std_ms']:.2f} |")
        if self.bench.get("speedup_p50"):
            lines += ["", f"p50 speed-up of `{self.bench['subject']}` over "
                      f"`{self.bench['baseline']}`: {self.bench['speedup_p50']:.2f}x"]
        return lines

    def _passes_md(self) -> list[str]:
        lines = ["", "## Passes", "", "| pass | seconds | output MB | notes |", "|---|---:|---:|---|"]
        for r in self.passes:
            size = f"{r['output_bytes'] / 1e6:.2f}" if r.get("output_bytes") else ""
            notes = "; ".join(f"{k}: {_fmt(v)}" for k, v in r.get("notes", {}).items())
            lines.append(f"| {r['name']} | {r['seconds']:.2f} | {size} | {notes} |")
        return lines


# A multi-line JSON list of numbers (a raw newline cannot be inside a JSON string).
_SCALAR = r"(?:-?\d[\d.eE+-]*|-?Infinity|NaN|null)"
_NUMBER_LIST = re.compile(rf"\[(\n\s*{_SCALAR}(?:,\n\s*{_SCALAR})*\n\s*)\]")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
