"""A compile report read back from a bundle (``report.json``), and the figures pages and
release checks take from it: the model's size, its latency per provider and thread
count, its parity. Everything here reads what the compile measured; nothing is measured
again."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgeopt.errors import BundleError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MODEL_SIZE_ROW = "bundle model.onnx"  # the size table's row of the shipped graph
# Benchmarks before the provider was recorded ran on onnxruntime's CPU provider.
DEFAULT_PROVIDER = "cpu"


@dataclass(frozen=True)
class BundleReport:
    """One bundle's report: its name (the folder), the parsed JSON and its markdown."""

    name: str
    data: dict[str, Any]
    markdown: str | None = None


def load_bundle_report(path: str | Path) -> BundleReport:
    """The report of the bundle folder ``path`` (a failed compile's folder too)."""
    folder = Path(path).expanduser()
    file = folder / REPORT_JSON
    if not folder.is_dir():
        raise BundleError(f"bundle {folder} does not exist; pass the -o folder of a compile")
    if not file.is_file():
        raise BundleError(f"{folder} has no {REPORT_JSON}; pass the -o folder of a compile")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{file} is not valid JSON ({err}); recompile the bundle") from None
    if not isinstance(data, dict) or "status" not in data:
        raise BundleError(f"{file} is not an edgeopt report; recompile the bundle")
    md = folder / REPORT_MD
    return BundleReport(folder.resolve().name, data,
                        md.read_text(encoding="utf-8") if md.is_file() else None)


@dataclass(frozen=True)
class Timing:
    """One variant's measured latency on one provider at one thread count."""

    variant: str
    provider: str
    threads: int | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples_ms: tuple[float, ...]


def timings(data: dict[str, Any]) -> list[Timing]:
    """Every latency the report's benchmark measured, in its order."""
    bench = data.get("bench") or {}
    cfg = bench.get("config") or {}
    provider = str(cfg.get("provider") or DEFAULT_PROVIDER)
    threads = cfg.get("threads")
    return [Timing(name, provider, threads, s["p50_ms"], s["p90_ms"], s["p99_ms"],
                   tuple(s.get("samples_ms") or ()))
            for name, s in (bench.get("latency") or {}).items()] + _device_timings(data)


def _device_timings(data: dict[str, Any]) -> list[Timing]:
    """Readings from a device (``edgeopt report --device-bench``, edgeopt.device_bench)."""
    subject = (data.get("bench") or {}).get("subject") or "model"
    out = []
    for d in data.get("device_bench") or ():
        ep = d["provider"].removesuffix("ExecutionProvider").lower()
        lat = d["latency_ms"]
        out.append(Timing(f"{subject} on {d['device']}", ep, d["threads"], lat["p50"], lat["p90"],
                          lat["p99"], tuple(d["samples_ms"])))
    return out


def subject_timing(data: dict[str, Any], variant: str | None = None) -> Timing | None:
    """The latency of the bundle's own model (or of ``variant``): an encoder's subject, a
    decoder's per-token decode (generation time is mostly decode)."""
    by_name = {t.variant: t for t in timings(data)}
    if variant is not None:
        return by_name.get(variant)
    subject = (data.get("bench") or {}).get("subject")
    if subject is None:
        return None
    return by_name.get(subject) or by_name.get(f"{subject} decode/token")


def model_bytes(data: dict[str, Any]) -> int | None:
    """Bytes of the bundle's model.onnx as the compile wrote it."""
    size = (data.get("sizes") or {}).get(MODEL_SIZE_ROW)
    return int(size) if isinstance(size, (int, float)) else None


def metric(data: dict[str, Any], name: str) -> float | None:
    """A parity metric (``accuracy``, ``label_agreement``, ``cosine_min``...) if measured."""
    value = ((data.get("parity") or {}).get("metrics") or {}).get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return None
    return float(value)


Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Figure:
    """A headline figure of a bundle: how to read it and which way is better. ``noise`` is
    the relative change that counts as "same" (latency varies run to run)."""

    key: str
    label: str
    unit: str
    better: Better
    noise: float = 0.0
    digits: int = 2


HEADLINE = (
    Figure("model_mb", "model size", "MB", "lower"),
    Figure("p50_ms", "p50 latency", "ms", "lower", noise=0.03),
    Figure("p90_ms", "p90 latency", "ms", "lower", noise=0.03),
    Figure("accuracy", "accuracy", "", "higher", digits=4),
    Figure("label_agreement", "label agreement", "", "higher", digits=4),
    Figure("cosine_min", "lowest cosine", "", "higher", digits=5),
)


def headline(data: dict[str, Any]) -> dict[str, float | None]:
    """The :data:`HEADLINE` figures of one report (None: not measured)."""
    size, timing = model_bytes(data), subject_timing(data)
    return {
        "model_mb": None if size is None else size / 1e6,
        "p50_ms": None if timing is None else timing.p50_ms,
        "p90_ms": None if timing is None else timing.p90_ms,
        "accuracy": metric(data, "accuracy"),
        "label_agreement": metric(data, "label_agreement"),
        "cosine_min": metric(data, "cosine_min"),
    }


Verdict = Literal["better", "worse", "same"]


@dataclass(frozen=True)
class Delta:
    """A figure against the baseline's."""

    diff: float
    relative: float | None
    verdict: Verdict


def delta(figure: Figure, value: float | None, base: float | None) -> Delta | None:
    """How ``value`` moved from ``base`` (None when either was not measured)."""
    if value is None or base is None:
        return None
    diff = value - base
    relative = diff / abs(base) if base else None
    if diff == 0 or (relative is not None and abs(relative) <= figure.noise):
        return Delta(diff, relative, "same")
    improved = diff < 0 if figure.better == "lower" else diff > 0
    return Delta(diff, relative, "better" if improved else "worse")
