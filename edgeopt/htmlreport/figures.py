"""The report's plots, drawn with matplotlib and returned as inline SVG text.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot: no global state, no GUI
backend). Text stays text in the SVG (``svg.fonttype: none``), so the page is small and
its labels can be searched; each figure gets its own hash salt so the ids of two figures
in one page never clash.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.report_data import Timing

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
_WIDTH = 10.0  # inches at 100 dpi: fits the page's 1000 px column
_TOP_OPS = 10
_LOG_SPREAD = 8.0  # largest over smallest value beyond which an axis is logarithmic
_COSINE_FLOOR = 1e-7  # report.json keeps 7 digits: 1 - cosine below this reads as exact


def _log_x(ax: Any, low: float, high: float) -> None:
    """A log x axis labelled with plain numbers (300, not 3x10^2); minor ticks (2, 5 per
    decade) are labelled only when the data spans less than two decades."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    if high / low < 100:
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def _figure(name: str, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH, height), dpi=100, layout="constrained")
    fig.set_label(name)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _svg(fig: Any) -> str:
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": fig.get_label()}):
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                 "Type": None})
    text = out.getvalue()
    # Inline SVG needs neither the XML prolog nor the doctype, and the metadata block
    # carries schema URLs only.
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def latency_figure(timings: Sequence[Timing]) -> str | None:
    """Every timed run of every variant: a box of its spread with the runs on top."""
    measured = [t for t in timings if t.samples_ms]
    if not measured:
        return None
    fig, (ax,) = _figure("latency", 0.6 + 0.55 * len(measured) + 0.6)
    rng = np.random.default_rng(0)  # jitter only spreads the dots; same page every time
    labels = []
    for i, t in enumerate(measured):
        ms = np.asarray(t.samples_ms)
        ax.boxplot([ms], positions=[i], orientation="horizontal", widths=0.5, showfliers=False,
                   medianprops={"color": _COLORS[i % len(_COLORS)], "linewidth": 2})
        ax.scatter(ms, i + rng.uniform(-0.18, 0.18, len(ms)), s=9, alpha=0.5,
                   color=_COLORS[i % len(_COLORS)], linewidths=0)
        ax.plot([t.p90_ms], [i], marker="|", markersize=18, color="black")
        threads = "" if t.threads is None else f", {t.threads} threads"
        labels.append(f"{t.variant}\n({t.provider}{threads}, {len(ms)} runs)")
    ax.set_yticks(range(len(measured)), labels)
    ax.invert_yaxis()
    runs = np.concatenate([t.samples_ms for t in measured])
    log = runs.min() > 0 and runs.max() / runs.min() > _LOG_SPREAD
    if log:  # a few stalled runs would squeeze every box into the left edge
        _log_x(ax, runs.min(), runs.max())
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel("latency per run (ms" + (", log scale" if log else "")
                  + "); box: quartiles, black tick: p90")
    ax.grid(axis="x", which="both", alpha=0.3)
    return _svg(fig)


def size_figure(by_op_type: dict[str, int], by_layer: dict[str, int]) -> str | None:
    """Stored MB per op type (largest first) and per layer (model order)."""
    if not by_op_type:
        return None
    ops = sorted(by_op_type.items(), key=lambda kv: -kv[1])
    if len(ops) > _TOP_OPS:
        ops = ops[: _TOP_OPS - 1] + [("(others)", sum(n for _, n in ops[_TOP_OPS - 1:]))]
    rows = max(len(ops), len(by_layer))
    fig, (left, right) = _figure("sizes", 0.8 + 0.3 * rows, ncols=2)
    for ax, items, title in ((left, ops, "by op type"), (right, list(by_layer.items()), "by layer")):
        names = [k for k, _ in items]
        mb = [n / 1e6 for _, n in items]
        bars = ax.barh(range(len(items)), mb, color=_COLORS[0] if ax is left else _COLORS[2])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in mb], padding=2, fontsize=8)
        ax.set_yticks(range(len(items)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"stored MB {title}", fontsize=10)
        ax.margins(x=0.18)
    return _svg(fig)


def parity_figure(per_row: dict[str, list[float | None]]) -> str | None:
    """Histograms of the per-row cosine, largest error and (classifiers) agreement."""
    panels = [(k, np.asarray([v for v in per_row[k] if v is not None], dtype=float))
              for k in ("cosine", "max_abs_error", "agreement") if per_row.get(k)]
    panels = [(k, v) for k, v in panels if v.size]
    if not panels:
        return None
    fig, axes = _figure("parity", 2.8, ncols=len(panels))
    titles = {"cosine": "cosine per row", "max_abs_error": "largest |error| per row",
              "agreement": "label agreement per row"}
    for ax, (key, values) in zip(axes, panels, strict=True):
        xlabel = f"min {values.min():.6g}, max {values.max():.6g}"
        if key == "cosine":
            # Cosines crowd against 1: the distance from 1 on a log axis tells rows apart.
            xlabel = f"lowest cosine {values.min():.6g} (1e-7: equal to 7 digits)"
            values = np.maximum(1.0 - values, _COSINE_FLOOR)
            titles[key] = "1 − cosine per row"
        if key == "agreement" and set(np.unique(values)) <= {0.0, 1.0}:
            agree = int(values.sum())
            bars = ax.bar(["same label", "different"], [agree, values.size - agree],
                          color=[_COLORS[2], _COLORS[3]])
            ax.bar_label(bars, padding=2)
            ax.margins(y=0.15)
        else:
            low, high = (values.min(), values.max())
            bins: Any = min(40, max(5, values.size // 5))
            if low > 0 and high / low > _LOG_SPREAD:
                bins = np.geomspace(low, high, bins + 1)
                _log_x(ax, low, high)
            ax.hist(values, bins=bins, color=_COLORS[0])
            ax.set_xlabel(xlabel, fontsize=8)
            if ax.get_xscale() == "linear":
                ax.ticklabel_format(axis="x", useOffset=False)
            ax.tick_params(axis="x", labelsize=7, labelrotation=30)
        ax.set_title(f"{titles[key]} ({values.size} rows)", fontsize=10)
        ax.set_ylabel("rows")
    return _svg(fig)


def stage_figure(passes: Sequence[dict[str, Any]]) -> str | None:
    """Seconds per compile stage, in run order."""
    if not passes:
        return None
    fig, (ax,) = _figure("stages", 0.7 + 0.3 * len(passes))
    seconds = [float(p.get("seconds") or 0.0) for p in passes]
    bars = ax.barh(range(len(passes)), seconds, color=_COLORS[4])
    ax.bar_label(bars, labels=[f"{s:.2f} s" for s in seconds], padding=2, fontsize=8)
    ax.set_yticks(range(len(passes)), [str(p["name"]) for p in passes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.margins(x=0.15)
    return _svg(fig)


def tradeoff_figure(points: Sequence[dict[str, Any]]) -> str | None:
    """Size against latency and latency against accuracy, one dot per bundle.

    Each point has ``name``, ``model_mb``, ``p50_ms``, ``accuracy`` (any may be None) and
    ``baseline`` (drawn hollow).
    """
    panels = (("model_mb", "p50_ms", "model size (MB)", "p50 latency (ms)", "lower left is better"),
              ("p50_ms", "accuracy", "p50 latency (ms)", "accuracy (labelled eval rows)",
               "upper left is better"))
    panels = tuple(p for p in panels
                   if sum(pt[p[0]] is not None and pt[p[1]] is not None for pt in points) >= 1)
    if not panels:
        return None
    fig, axes = _figure("tradeoff", 4.2, ncols=len(panels))
    for ax, (x, y, xlabel, ylabel, title) in zip(axes, panels, strict=True):
        for i, pt in enumerate(points):
            if pt[x] is None or pt[y] is None:
                continue
            color = "#555555" if pt["baseline"] else _COLORS[i % len(_COLORS)]
            ax.scatter([pt[x]], [pt[y]], s=90, zorder=3, edgecolors=color,
                       facecolors="none" if pt["baseline"] else color, linewidths=2)
            label = f"{pt['name']} (baseline)" if pt["baseline"] else pt["name"]
            ax.annotate(label, (pt[x], pt[y]), textcoords="offset points", xytext=(6, 6),
                        fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.margins(0.25)
        ax.set_title(title, fontsize=9)
    return _svg(fig)
