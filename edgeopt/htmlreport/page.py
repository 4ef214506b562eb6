"""One bundle's ``report.html``: headline figures, then size, latency, parity and stage
times, each as a plot and a table, then the full markdown report."""

from __future__ import annotations

from typing import Any

from edgeopt.htmlreport import figures
from edgeopt.htmlreport.markup import cards, esc, figure, markdown, number, page, table
from edgeopt.report_data import BundleReport, headline, model_bytes, subject_timing, timings

MAX_HTML_BYTES = 2_000_000  # the page must stay small enough to attach to any CI run


def render_report(report: BundleReport) -> str:
    """The self-contained HTML page of one bundle's report."""
    data = report.data
    status = str(data.get("status"))
    body = [f'<h1>edgeopt report: {esc(report.name)} '
            f'<span class="status-{esc(status)}">{esc(status)}</span></h1>',
            _summary(data), _cards(data)]
    if data.get("failures"):
        body += ["<h2>Failed gates</h2>", "<ul>" + "".join(
            f"<li>{esc(f)}</li>" for f in data["failures"]) + "</ul>"]
    body += _size(data) + _latency(data) + _device(data) + _parity(data) + _stages(data)
    body += _placement(data)
    if report.markdown:
        body += ["<details><summary>Full report (report.md)</summary>",
                 markdown(report.markdown), "</details>"]
    return page(f"edgeopt report: {report.name}", body)


def _summary(data: dict[str, Any]) -> str:
    src = data.get("source") or {}
    items = [("target", data.get("target")), ("task", data.get("task")),
             ("source", f"{src.get('path')} ({src.get('architecture')})"),
             ("weights sha256", str(src.get("weights_sha256"))[:16] + "…"),
             ("compile time", f"{float(data.get('seconds') or 0):.1f} s")]
    versions = data.get("versions") or {}
    if versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    return "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in items) + "</ul>"


def _cards(data: dict[str, Any]) -> str:
    h = headline(data)
    timing = subject_timing(data)
    where = "" if timing is None else f" ({timing.provider}, {timing.threads} threads)"
    items = [(number(h["model_mb"], 2, "MB"), "model.onnx"),
             (number(h["p50_ms"], 2, "ms"), f"p50 latency{where}"),
             (number(h["p90_ms"], 2, "ms"), f"p90 latency{where}")]
    for key, label in (("accuracy", "accuracy"), ("label_agreement", "label agreement"),
                       ("cosine_min", "lowest cosine")):
        if h[key] is not None:
            items.append((number(h[key], 5 if key == "cosine_min" else 4), label))
    return cards(items)


def _size(data: dict[str, Any]) -> list[str]:
    sizes = data.get("sizes") or {}
    out = ["<h2>Size</h2>", table(["artifact", "MB"], [(k, f"{v / 1e6:.2f}") for k, v in
                                                       sizes.items()], numeric=[1])]
    weights = (data.get("sections") or {}).get("weights")
    if weights:
        out.append(figure(figures.size_figure(weights["by_op_type"], weights["by_layer"]),
                          f"Stored tensors of model.onnx: {weights['total_bytes'] / 1e6:.2f} MB; "
                          "a weight counts for the op that computes with it."))
    elif model_bytes(data) is None:
        out.append('<p class="note">No model was written (a failed gate keeps only the report).</p>')
    return out


def _latency(data: dict[str, Any]) -> list[str]:
    measured = timings(data)
    if not measured:
        return ["<h2>Latency</h2>", '<p class="note">No benchmark in this report.</p>']
    cfg = (data.get("bench") or {}).get("config") or {}
    rows = [(t.variant, t.provider, t.threads, f"{t.p50_ms:.2f}", f"{t.p90_ms:.2f}",
             f"{t.p99_ms:.2f}", len(t.samples_ms) or "") for t in measured]
    note = (f"batch {cfg.get('batch')}, input shape {cfg.get('input_shape')}, "
            f"{cfg.get('warmup')} warm-up + {cfg.get('repeats')} timed runs per variant, "
            "round-robin in one process.")
    return ["<h2>Latency</h2>", f'<p class="note">{esc(note)}</p>',
            figure(figures.latency_figure(measured), "Every timed run per variant and provider."),
            table(["variant", "provider", "threads", "p50 ms", "p90 ms", "p99 ms", "runs"], rows,
                  numeric=[2, 3, 4, 5, 6])]


def _device(data: dict[str, Any]) -> list[str]:
    """Benchmarks measured on devices (``edgeopt report --device-bench``): where, on which
    provider, and the providers the manifest named that the session could not take."""
    readings = data.get("device_bench") or []
    if not readings:
        return []
    rows = [(d["device"], d.get("abi") or "", d.get("sdk") or "", d["provider"], d["threads"],
             f"{d['latency_ms']['p50']:.2f}", f"{d['latency_ms']['p90']:.2f}", len(d["samples_ms"]),
             "; ".join(f"{s.get('provider')}: {s.get('reason')}" for s in d["providers_skipped"]))
            for d in readings]
    return ["<h2>On device</h2>", table(["device", "ABI", "SDK", "provider", "threads", "p50 ms",
                                         "p90 ms", "runs", "providers skipped"], rows,
                                        numeric=[4, 5, 6, 7])]


def _parity(data: dict[str, Any]) -> list[str]:
    p = data.get("parity") or {}
    out = ["<h2>Parity</h2>",
           f'<p class="note">{esc(p.get("rows"))} rows from {esc(p.get("source"))}; reference: '
           f'{esc(p.get("reference", "original PyTorch fp32"))}.</p>']
    per_row = p.get("per_row") or {}
    out.append(figure(figures.parity_figure(per_row), "Per-row parity against the reference."))
    metrics = p.get("metrics") or {}
    out.append(table(["metric", "value"], [(k, _fmt(v)) for k, v in metrics.items()], numeric=[1]))
    gates = p.get("gates") or []
    if gates:
        result = {True: "pass", False: "FAIL", None: "not measured"}
        out.append(table(["gate", "threshold", "value", "result"],
                         [(g["gate"], _fmt(g["threshold"]), _fmt(g["value"]), result[g["passed"]])
                          for g in gates], numeric=[1, 2]))
    return out


def _stages(data: dict[str, Any]) -> list[str]:
    passes = data.get("passes") or []
    rows = [(r["name"], f"{float(r.get('seconds') or 0):.2f}",
             f"{r['output_bytes'] / 1e6:.2f}" if r.get("output_bytes") else "") for r in passes]
    return ["<h2>Time per stage</h2>", figure(figures.stage_figure(passes), "Wall time per stage."),
            table(["stage", "seconds", "output MB"], rows, numeric=[1, 2])]


def _placement(data: dict[str, Any]) -> list[str]:
    placement = (data.get("sections") or {}).get("placement")
    if not placement:
        return []
    rows = [(p["label"], p["method"], f"{p['taken']} / {p['nodes']}" if p["nodes"] else "-",
             len(p["partitions"]) if p["nodes"] else "-", p["verdict"])
            for p in placement.get("providers", [])]
    return ["<h2>Where the nodes run</h2>",
            table(["provider", "measured by", "nodes taken", "partitions", "verdict"], rows,
                  numeric=[2, 3])]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)
