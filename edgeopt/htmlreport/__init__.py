"""HTML views of compile reports: one bundle's ``report.html`` (:mod:`.page`) and bundles
side by side (:mod:`.compare`); plots in :mod:`.figures`, shared markup in :mod:`.markup`.
They read report data only (:mod:`edgeopt.report_data`) and fetch nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgeopt.htmlreport.compare import render_compare
from edgeopt.htmlreport.page import MAX_HTML_BYTES, render_report

__all__ = ["MAX_HTML_BYTES", "render_compare", "render_report", "write_html"]


def write_html(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, renamed)."""
    path = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
