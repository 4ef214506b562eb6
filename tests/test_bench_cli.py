"""`edgeopt bench` on a tiny bundle: every grid point in the table and the JSON, the
report section it writes, and the one-line errors (CUDA that is not there, a decoder)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgeopt.benchgrid.run import simulated
from edgeopt.benchgrid.runner import BoundRun, plain_runner
from edgeopt.benchgrid.spec import GridSpec, parse_ints
from edgeopt.bundle import read_manifest
from edgeopt.cli import cli
from edgeopt.errors import UsageError
from edgeopt.providers import cuda

GRID = ["--threads", "1", "--batch", "1,2", "--seq", "8,16", "--warmup", "1", "--repeats", "3"]


def _bench(*args: str):
    return CliRunner().invoke(cli, ["bench", *args])


@pytest.fixture(scope="module")
def grid_json(tiny_ort_bundle):
    result = _bench(str(tiny_ort_bundle), *GRID, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_has_every_grid_point_with_its_figures(grid_json, tiny_classifier):
    points = grid_json["points"]
    assert sorted((p["threads"], p["batch"], p["seq"]) for p in points) == [
        (1, 1, 8), (1, 1, 16), (1, 2, 8), (1, 2, 16)]
    for p in points:
        assert p["status"] == "ok" and p["provider"] == "cpu" and p["simulated"] is None
        lat = p["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["n"] == 3 and lat["std"] >= 0
        assert p["throughput_items_per_s"] == pytest.approx(p["batch"] * 1e3 / lat["p50"])
        cold = p["cold_start"]
        assert cold["cold_start_s"] == pytest.approx(cold["session_s"] + cold["first_run_s"])
        assert cold["peak_rss_bytes"] >= cold["baseline_rss_bytes"] > 0
        # the report records the source folder, still here: eager is timed beside it
        assert p["eager_ms"]["n"] == 3
        assert p["speedup_vs_eager_p50"] == pytest.approx(p["eager_ms"]["p50"] / lat["p50"])
    assert grid_json["eager"]["source"] == str(tiny_classifier)
    assert set(grid_json["files"]) == {"model.onnx", "model.ort"}
    assert grid_json["machine"]["onnxruntime"] == ort.__version__


def test_table_and_report_section(tiny_ort_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_ort_bundle, bundle)
    for _ in range(2):  # a second grid replaces the first
        result = _bench(str(bundle), *GRID, "--no-cold-start", "--no-eager", "--write-report")
        assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| cpu |")]
    assert [tuple(r.split("|")[2:5]) for r in rows] == [
        (" 1 ", " 1 ", " 8 "), (" 1 ", " 1 ", " 16 "), (" 1 ", " 2 ", " 8 "), (" 1 ", " 2 ", " 16 ")]
    assert all("not measured" in r for r in rows)
    read_manifest(bundle)  # the rewritten report matches the manifest's hashes again
    report = json.loads((bundle / "report.json").read_text())
    section = report["sections"]["bench_grid"]
    assert len(section["points"]) == 4 and section["memory_method"] == "not measured"
    assert all(p["eager_ms"] is None and p["cold_start"] is None for p in section["points"])
    markdown = (bundle / "report.md").read_text()
    assert markdown.count("## Benchmark grid") == 1 and "## Passes" in markdown


def test_cuda_that_is_not_here_is_one_line_exit_2(tiny_ort_bundle):
    if cuda.PROVIDER.availability().kind == "session":
        pytest.skip("CUDA is really here")
    result = _bench(str(tiny_ort_bundle), "--ep", "cpu,cuda", *GRID)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and "Traceback" not in result.output
    assert "onnxruntime-gpu" in lines[0]


def test_cuda_check_names_the_missing_driver(monkeypatch):
    problem = cuda.driver_problem()
    if problem is None:
        pytest.skip("an NVIDIA driver with a GPU is here")
    # onnxruntime-gpu installed on a machine without a usable GPU: said as such
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    available = cuda.PROVIDER.availability()
    assert available.kind == "unavailable"
    assert "onnxruntime-gpu" in available.detail and problem in available.detail


def test_io_binding_gives_the_plain_outputs(tiny_ort_bundle):
    # The CUDA path binds on "cuda"; the same code on the host device must agree.
    session = ort.InferenceSession(str(tiny_ort_bundle / "model.onnx"))
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(5, 30, (2, 7), dtype=np.int64),
             "attention_mask": np.ones((2, 7), np.int64), "token_type_ids": np.zeros((2, 7), np.int64)}
    plain = plain_runner(session, feeds)()[0]
    bound = BoundRun(session, feeds, "cpu")().copy_outputs_to_cpu()[0]
    np.testing.assert_array_equal(plain, bound)


def test_decoder_bundles_are_refused(tiny_ort_bundle, tmp_path):
    bundle = tmp_path / "lm"
    shutil.copytree(tiny_ort_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["task"] = "text-generation"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = _bench(str(bundle), *GRID)
    assert result.exit_code == 2 and "bench_decoders.py" in result.stderr


def test_grid_flags_and_simulated_labels():
    assert parse_ints("--batch", "1,8,1") == (1, 8)
    for bad in ("0", "a", ""):
        with pytest.raises(UsageError, match="--seq"):
            parse_ints("--seq", bad)
    with pytest.raises(UsageError, match="repeats"):
        GridSpec(repeats=2)
    assert list(GridSpec(threads=(1,), batches=(1, 8), sequences=(32,)).shapes()) == [
        (1, 1, 32), (1, 8, 32)]
    # qnn's availability line on x86_64 (providers/qnn.py)
    assert simulated("onnxruntime-qnn 2.7.0 (QNN 2.40), HTP simulator, soc_model 57") == "simulator"
    assert simulated("onnxruntime 1.32.0") is None
