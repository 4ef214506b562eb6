"""report.html in every bundle, `edgeopt report` for one bundle and for several side by
side, and both pages rendered in a real headless Chromium (skipped when it is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import cli
from edgeopt.htmlreport import MAX_HTML_BYTES
from edgeopt.report_data import headline, load_bundle_report

# Anything that would make the page fetch: src/href/url() pointing at a network address.
_REMOTE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)


def key_figures(bundle: Path) -> list[str]:
    """The headline figures of a bundle's report as its page must print them."""
    h = headline(json.loads((bundle / "report.json").read_text()))
    return [f"{h['model_mb']:.2f} MB", f"{h['p50_ms']:.2f} ms", f"{h['p90_ms']:.2f} ms",
            f"{h['label_agreement']:.4f}", f"{h['cosine_min']:.5f}"]


def test_every_bundle_has_a_self_contained_report_html(tiny_report_bundles):
    bundle = tiny_report_bundles["x86-int8"]
    page = (bundle / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) <= MAX_HTML_BYTES
    assert not _REMOTE.search(page), _REMOTE.search(page)
    assert "<script" not in page
    for figure in key_figures(bundle):
        assert figure in page, figure
    # Latency, size, parity and stage plots, all inline SVG.
    assert page.count("<svg") == 4
    for title in ("stored MB by op type", "stored MB by layer", "cosine per row",
                  "largest |error| per row", "label agreement per row"):
        assert title in page, title
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "report.html" in manifest["files"]


def test_report_json_keeps_per_row_parity_and_raw_latency(tiny_report_bundles):
    data = json.loads((tiny_report_bundles["x86-int8"] / "report.json").read_text())
    rows = data["parity"]["rows"]
    per_row = data["parity"]["per_row"]
    assert set(per_row) == {"cosine", "max_abs_error", "agreement"}
    assert all(len(v) == rows for v in per_row.values())
    # The summary metrics are the per-row values summarized.
    assert min(per_row["cosine"]) == pytest.approx(data["parity"]["metrics"]["cosine_min"], rel=1e-6)
    assert max(per_row["max_abs_error"]) == pytest.approx(
        data["parity"]["metrics"]["max_abs_error"], rel=1e-6)
    assert np.mean(per_row["agreement"]) == pytest.approx(data["parity"]["metrics"]["label_agreement"])
    for name, stats in data["bench"]["latency"].items():
        samples = stats["samples_ms"]
        assert len(samples) == stats["runs"] == 20, name
        assert np.percentile(samples, 90) == pytest.approx(stats["p90_ms"], abs=1e-3)
    assert data["bench"]["config"]["provider"] == "cpu"
    assert data["sections"]["weights"]["total_bytes"] > 0
    # Lists of numbers stay on one line each: report.json stays readable and small.
    text = (tiny_report_bundles["x86-int8"] / "report.json").read_text()
    assert '"cosine": [' in text


def test_report_command_rebuilds_the_bundle_page(tiny_report_bundles, tmp_path):
    bundle = tiny_report_bundles["x86-int8"]
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(bundle), "-o", str(out)])
    assert result.exit_code == 0, result.output
    # The same page as the compile wrote: one renderer for both paths, deterministic SVG.
    assert out.read_text() == (bundle / "report.html").read_text()


def test_failed_compile_still_writes_a_page(tiny_classifier, tmp_path):
    from helpers import fast_recipe

    import edgeopt
    from edgeopt.errors import ParityError

    recipe = fast_recipe("x86-int8").with_gates("text-classification", min_sqnr_db=200.0)
    with pytest.raises(ParityError):
        edgeopt.compile(str(tiny_classifier), recipe=recipe, out=tmp_path / "b")
    page = (tmp_path / "b" / "report.html").read_text()
    assert "FAILED" in page and "sqnr_db" in page
    assert "Failed gates" in page


def test_compare_with_a_baseline_shows_the_deltas(tiny_report_bundles, tmp_path):
    fp32, int8 = tiny_report_bundles["x86-fp32"], tiny_report_bundles["x86-int8"]
    out = tmp_path / "compare.html"
    result = CliRunner().invoke(cli, ["report", str(int8), "-o", str(out), "--baseline", str(fp32)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert not _REMOTE.search(page)
    assert len(page.encode()) <= MAX_HTML_BYTES
    assert "x86-fp32 <i>(baseline)</i>" in page and "lower left is better" in page
    base = headline(load_bundle_report(fp32).data)
    new = headline(load_bundle_report(int8).data)
    # INT8 weights are smaller than fp32 ones: a size delta marked better, with its value.
    diff = new["model_mb"] - base["model_mb"]
    assert diff < 0
    assert f'class="delta better">▲ {diff:+.2f}' in page
    assert f"({diff / base['model_mb']:+.1%})" in page


def test_compare_without_a_baseline_lists_every_bundle(tiny_report_bundles, tmp_path):
    out = tmp_path / "compare.html"
    bundles = [str(tiny_report_bundles[t]) for t in ("x86-fp32", "x86-int8")]
    result = CliRunner().invoke(cli, ["report", *bundles, "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "2 bundles compared" in page and 'class="delta' not in page
    for bundle in tiny_report_bundles.values():
        assert f"{headline(load_bundle_report(bundle).data)['model_mb']:.2f}" in page


def test_report_of_a_missing_bundle_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.html").exists()


# --- a real browser ---------------------------------------------------------------------------

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--no-first-run"]
needs_chromium = pytest.mark.skipif(_CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(apt-get install -y chromium; .ci/run does it)")


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    # Its own profile folder: a shared one can hold a lock from another run.
    profile = tmp_path / "chromium-profile"
    return subprocess.run([_CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def _dom_text(page: Path, tmp_path: Path) -> str:
    dom = _chromium(["--dump-dom", page.resolve().as_uri()], tmp_path).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def _screenshot_variance(page: Path, tmp_path: Path) -> float:
    import matplotlib.image

    shot = tmp_path / f"{page.stem}.png"
    _chromium([f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()], tmp_path)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    return float(pixels.var())


@needs_chromium
def test_report_renders_in_headless_chromium(tiny_report_bundles, tmp_path):
    bundle = tiny_report_bundles["x86-int8"]
    page = bundle / "report.html"
    # A blank page has variance 0; text, tables and plots on white give far more.
    assert _screenshot_variance(page, tmp_path) > 0.01
    text = _dom_text(page, tmp_path)
    for figure in key_figures(bundle):
        assert figure in text, figure
    assert "PASSED" in text and "Time per stage" in text


@needs_chromium
def test_compare_renders_in_headless_chromium(tiny_report_bundles, tmp_path):
    fp32, int8 = tiny_report_bundles["x86-fp32"], tiny_report_bundles["x86-int8"]
    out = tmp_path / "compare.html"
    assert CliRunner().invoke(cli, ["report", str(int8), "-o", str(out), "--baseline",
                                    str(fp32)]).exit_code == 0
    assert _screenshot_variance(out, tmp_path) > 0.005
    text = _dom_text(out, tmp_path)
    for bundle in (fp32, int8):
        assert f"{headline(load_bundle_report(bundle).data)['model_mb']:.2f}" in text
    assert "▲" in text and "(baseline)" in text
