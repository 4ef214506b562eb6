"""``compare.html``: bundles side by side (a size / latency / accuracy chart and a table);
with a baseline (the previous release's bundle) every figure also shows what got better
or worse, by how much."""

from __future__ import annotations

from collections.abc import Sequence

from edgeopt.htmlreport import figures
from edgeopt.htmlreport.markup import esc, figure, page, table
from edgeopt.report_data import HEADLINE, BundleReport, Delta, Figure, delta, headline, subject_timing

_ARROW = {"better": "▲", "worse": "▼", "same": "="}


def render_compare(reports: Sequence[BundleReport], baseline: BundleReport | None = None) -> str:
    """The comparison page of ``reports`` (and ``baseline``, drawn hollow and listed first)."""
    base = headline(baseline.data) if baseline is not None else None
    points = [{"name": r.name, "baseline": False, **headline(r.data)} for r in reports]
    if baseline is not None:
        points.insert(0, {"name": baseline.name, "baseline": True, **base})
    title = f"{len(reports)} bundle{'s' if len(reports) != 1 else ''}"
    title += f" against {baseline.name}" if baseline is not None else " compared"
    body = [f"<h1>edgeopt: {esc(title)}</h1>"]
    if baseline is not None:
        body.append(f'<p class="note">Baseline (previous release): <b>{esc(baseline.name)}</b>. '
                    f'<span class="better">{_ARROW["better"]} better</span>, '
                    f'<span class="worse">{_ARROW["worse"]} worse</span>, '
                    f'<span class="same">{_ARROW["same"]} same</span>; latency changes within '
                    f'{_noise():.0%} count as the same (run-to-run spread).</p>')
    body.append(figure(figures.tradeoff_figure(points),
                       "One dot per bundle: p50 latency of its own benchmark run, accuracy on "
                       "its labelled eval rows."))
    headers = ["bundle", "target", "status", *[_header(f) for f in HEADLINE], "latency measured on"]
    rows = []
    for r in ([baseline] if baseline is not None else []) + list(reports):
        is_base = baseline is not None and r is baseline
        h = headline(r.data)
        cells = [esc(r.name) + (" <i>(baseline)</i>" if is_base else ""),
                 esc(r.data.get("target")), esc(r.data.get("status"))]
        for f in HEADLINE:
            cells.append(_cell(f, h[f.key], None if base is None or is_base else
                               delta(f, h[f.key], base[f.key])))
        timing = subject_timing(r.data)
        cells.append("n/a" if timing is None else
                     esc(f"{timing.provider}, {timing.threads} threads, {len(timing.samples_ms)} runs"))
        rows.append(cells)
    body.append(table(headers, rows, numeric=list(range(3, 3 + len(HEADLINE))), raw=True))
    body.append('<p class="note">Each bundle was timed in its own compile; compare latencies '
                "measured on the same machine.</p>")
    return page("edgeopt compare", body)


def _noise() -> float:
    return max(f.noise for f in HEADLINE)


def _header(f: Figure) -> str:
    return f"{f.label} ({f.unit})" if f.unit else f.label


def _cell(f: Figure, value: float | None, d: Delta | None) -> str:
    if value is None:
        return "n/a"
    text = esc(f"{value:.{f.digits}f}")
    if d is None:
        return text
    rel = "" if d.relative is None else f" ({d.relative:+.1%})"
    return (f'{text}<span class="delta {d.verdict}">{_ARROW[d.verdict]} '
            f"{esc(f'{d.diff:+.{f.digits}f}')}{esc(rel)}</span>")
