"""The release gate: a budget file (largest model, slowest p90 on a provider at a thread
count, lowest parity and accuracy, providers that must take the whole graph) checked
against what a bundle's report measured. ``edgeopt check`` prints the table and exits 1
when a limit broke.

A limit the report cannot show (no labelled rows for accuracy, no benchmark at that
thread count, no placement for that provider) breaks: a release is gated on measured
figures only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeopt.errors import BudgetError, ProviderError, RecipeError
from edgeopt.recipe import check
from edgeopt.recipe_yaml import build_config
from edgeopt.report_data import BundleReport, metric, model_bytes, subject_timing, timings


@dataclass(frozen=True)
class LatencyLimit:
    """The slowest p90 allowed on one provider at one thread count."""

    threads: int
    max_p90_ms: float
    provider: str = "cpu"
    variant: str | None = None  # a benchmark variant; default: the bundle's own model

    def __post_init__(self) -> None:
        check(self.threads >= 1, "latency[].threads must be >= 1")
        check(self.max_p90_ms > 0, "latency[].max_p90_ms must be > 0")


@dataclass(frozen=True)
class ReleaseBudget:
    """What a bundle must meet to ship; ``None`` (or empty) leaves a figure unchecked."""

    max_size_mb: float | None = None  # model.onnx, as the report's size table has it
    latency: tuple[LatencyLimit, ...] = ()
    min_agreement: float | None = None  # label agreement with the reference
    min_cosine: float | None = None  # the lowest per-row cosine with the reference
    min_accuracy: float | None = None  # on the labelled eval rows
    whole_graph: tuple[str, ...] = ()  # providers that must run every node in one partition

    def __post_init__(self) -> None:
        check(self.max_size_mb is None or self.max_size_mb > 0, "max_size_mb must be > 0")
        for name in ("min_agreement", "min_cosine", "min_accuracy"):
            v = getattr(self, name)
            check(v is None or -1.0 <= v <= 1.0, f"{name} must be within [-1, 1], got {v}")
        check(any((self.max_size_mb, self.latency, self.min_agreement is not None,
                   self.min_cosine is not None, self.min_accuracy is not None, self.whole_graph)),
              "the budget sets no limit (known keys: max_size_mb, latency, min_agreement, "
              "min_cosine, min_accuracy, whole_graph)")


def budget_from_dict(data: Any, source: str = "budget") -> ReleaseBudget:
    """A validated :class:`ReleaseBudget` from parsed YAML; errors name ``source``."""
    from edgeopt.providers.registry import get_provider

    try:
        check(isinstance(data, dict), "a budget must be a YAML mapping")
        limits = data.get("latency") or []
        check(isinstance(limits, list), "latency must be a list of {provider, threads, max_p90_ms}")
        latency = tuple(build_config(LatencyLimit, item, f"latency[{i}]")
                        for i, item in enumerate(limits))
        budget = replace(build_config(ReleaseBudget, {**data, "latency": limits}, "budget"),
                         latency=latency)
        for name in (*budget.whole_graph, *(lim.provider for lim in latency)):
            get_provider(name)
        return budget
    except (RecipeError, ProviderError) as err:
        raise BudgetError(f"{source}: {err}") from None


def load_budget(path: str | Path) -> ReleaseBudget:
    """Read a budget YAML file (what ``--budget FILE`` passes)."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise BudgetError(f"budget file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise BudgetError(f"{path}: not valid YAML ({first})") from None
    return budget_from_dict(data, source=str(path))


@dataclass(frozen=True)
class LimitCheck:
    """One line of the gate: what was asked, what the report measured, whether it held."""

    limit: str
    budget: str
    measured: str
    held: bool


def check_release(report: BundleReport, budget: ReleaseBudget) -> list[LimitCheck]:
    """Every limit of ``budget`` judged on ``report``; the compile's own gates first."""
    data = report.data
    status = str(data.get("status"))
    out = [LimitCheck("compile parity gates", "PASSED", status, status == "PASSED")]
    if budget.max_size_mb is not None:
        size = model_bytes(data)
        out.append(LimitCheck("model size", f"<= {budget.max_size_mb:g} MB",
                              "no model.onnx in the report" if size is None else f"{size / 1e6:.2f} MB",
                              size is not None and size / 1e6 <= budget.max_size_mb))
    out += [_latency(data, lim) for lim in budget.latency]
    for name, key, label in (("min_agreement", "label_agreement", "label agreement"),
                             ("min_cosine", "cosine_min", "lowest cosine"),
                             ("min_accuracy", "accuracy", "accuracy")):
        floor = getattr(budget, name)
        if floor is None:
            continue
        value = metric(data, key)
        why = "needs labelled eval data" if key == "accuracy" else "not in this task's metrics"
        out.append(LimitCheck(label, f">= {floor:g}",
                              f"not measured ({why})" if value is None else f"{value:.4f}",
                              value is not None and value >= floor))
    out += [_whole_graph(data, name) for name in budget.whole_graph]
    return out


def _latency(data: dict[str, Any], lim: LatencyLimit) -> LimitCheck:
    label = f"p90 latency{f' of {lim.variant}' if lim.variant else ''}, {lim.provider} at " \
            f"{lim.threads} threads"
    subject = subject_timing(data, lim.variant)
    name = subject.variant if subject is not None else lim.variant
    found = next((t for t in timings(data) if t.variant == name and t.provider == lim.provider
                  and t.threads == lim.threads), None)
    if found is None:
        have = sorted({f"{t.provider} at {t.threads} threads" for t in timings(data)})
        measured = ("not measured (the report measured " + (", ".join(have) or "nothing") + ")")
        return LimitCheck(label, f"<= {lim.max_p90_ms:g} ms", measured, False)
    return LimitCheck(label, f"<= {lim.max_p90_ms:g} ms", f"{found.p90_ms:.2f} ms",
                      found.p90_ms <= lim.max_p90_ms)


def _whole_graph(data: dict[str, Any], provider: str) -> LimitCheck:
    label = f"whole graph on {provider}"
    placement = (data.get("sections") or {}).get("placement") or {}
    entry = next((p for p in placement.get("providers", []) if p.get("provider") == provider), None)
    if entry is None:
        return LimitCheck(label, "every node, one partition",
                          f"the bundle's report has no placement for {provider}", False)
    return LimitCheck(label, "every node, one partition", str(entry.get("verdict")),
                      entry.get("grade") == "ok")


def checks_table(checks: list[LimitCheck]) -> str:
    """The gate as a markdown table, then one line saying how many limits broke."""
    lines = ["| limit | budget | measured | result |", "|---|---|---|---|"]
    lines += [f"| {c.limit} | {c.budget} | {c.measured} | {'ok' if c.held else 'BROKEN'} |"
              for c in checks]
    broken = [c for c in checks if not c.held]
    lines += ["", f"{len(broken)} of {len(checks)} limits broken: " + "; ".join(
        c.limit for c in broken) if broken else f"all {len(checks)} limits hold"]
    return "\n".join(lines) + "\n"
