"""HTML building blocks the report pages share: the page shell with its inline style,
tables, figure blocks and report markdown. Every value is escaped; nothing is fetched."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1040px; padding: 16px 20px 48px; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d8d8d8; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-PASSED { color: #116b2b; } .status-FAILED { color: #b00020; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 0.8em 0; }
.card { border: 1px solid #d8d8d8; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card .value { font-size: 1.35em; font-weight: 600; }
.card .label { color: #555; font-size: 0.85em; }
.better { color: #116b2b; } .worse { color: #b00020; } .same { color: #666; }
.delta { display: block; font-size: 0.85em; }
figure { margin: 0.8em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
details { margin-top: 1em; } summary { cursor: pointer; font-weight: 600; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: Sequence[str]) -> str:
    """A complete, self-contained HTML document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
          raw: bool = False) -> str:
    """An HTML table; columns in ``numeric`` align right. Cells are escaped unless
    ``raw`` (for cells already built from escaped parts)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            text = "" if cell is None else (str(cell) if raw else esc(cell))
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def figure(svg: str | None, caption: str) -> str:
    """A figure block, or nothing when there is nothing to plot."""
    if svg is None:
        return ""
    return f"<figure>\n{svg}\n<figcaption>{esc(caption)}</figcaption>\n</figure>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline figures as ``(value, label)`` boxes."""
    boxes = "".join(f'<div class="card"><div class="value">{esc(v)}</div>'
                    f'<div class="label">{esc(label)}</div></div>' for v, label in items)
    return f'<div class="cards">{boxes}</div>'


def markdown(text: str) -> str:
    """Report markdown (tables, lists, code) as HTML; raw HTML, links and images are
    kept as text, so nothing in a report can make the page load anything."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.disable(["link", "image", "autolink"])
    return md.render(text)


def number(value: float | None, digits: int = 2, unit: str = "") -> str:
    """A measured figure, or "n/a" when it was not measured."""
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} {unit}" if unit else text
