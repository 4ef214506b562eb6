"""`edgeopt report BUNDLE --device-bench FILE`: a benchmark the Android example measured
on a device, shown with the compile's own latency; one of another model is refused."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeopt.cli import cli


def _bench(bundle, **over) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = {"format": "edgeopt-device-bench", "version": 1,
            "bundle": {"target": manifest["target"], "task": manifest["task"],
                       "model_sha256": manifest["files"]["model.onnx"]["sha256"]},
            "device": {"model": "Pixel 8", "abi": "arm64-v8a", "sdk": 34},
            "provider": "XnnpackExecutionProvider", "threads": 4, "batch": 1, "sequence": 16,
            "providers_skipped": [{"provider": "NnapiExecutionProvider",
                                   "reason": "not on this device"}],
            "latency_ms": {"p50": 3.25, "p90": 4.5, "p99": 5.0},
            "samples_ms": [3.0, 3.25, 3.5, 4.5, 5.0]}
    return data | over


def _report(bundle, bench, tmp_path):
    file = tmp_path / "bench.json"
    file.write_text(json.dumps(bench))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(bundle), "--device-bench", str(file),
                                      "-o", str(out)])
    return result, out


def test_device_bench_is_shown_in_the_report(tiny_report_bundles, tmp_path):
    bundle = tiny_report_bundles["x86-int8"]
    result, out = _report(bundle, _bench(bundle), tmp_path)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<h2>On device</h2>" in page and "Pixel 8" in page and "arm64-v8a" in page
    assert "NnapiExecutionProvider: not on this device" in page
    assert "on Pixel 8" in page and "xnnpack" in page  # a row of the latency table too
    assert "4.50" in page


def test_manifest_names_the_tokenizer_and_the_fallback(tiny_report_bundles):
    # What a second runtime reads beside the graph (examples/node, examples/android/core).
    manifest = json.loads((tiny_report_bundles["x86-fp32"] / "manifest.json").read_text())
    assert manifest["tokenizer"]["files"][0] == "tokenizer.json"
    assert set(manifest["tokenizer"]["files"]) <= set(manifest["files"])
    assert manifest["tokenizer"]["pad_token_id"] == 0  # [PAD] of the tiny vocabulary
    assert manifest["cpu_ep_fallback"] is True  # x86-fp32 does not require one graph


def test_qnn_manifest_forbids_cpu_fallback():
    from edgeopt.targets import load_target

    # writer: cpu_ep_fallback = not preflight.require_one_graph
    assert load_target("qnn-int8").preflight.require_one_graph
    assert not load_target("android-int8").preflight.require_one_graph


def test_device_bench_of_another_model_is_refused(tiny_report_bundles, tmp_path):
    fp32, int8 = tiny_report_bundles["x86-fp32"], tiny_report_bundles["x86-int8"]
    result, _ = _report(int8, _bench(fp32), tmp_path)
    assert result.exit_code == 2 and "timed another model" in result.output
    assert "Traceback" not in result.output


def test_malformed_device_bench_is_one_line_error(tiny_report_bundles, tmp_path):
    bundle = tiny_report_bundles["x86-int8"]
    result, _ = _report(bundle, _bench(bundle, latency_ms={"p50": 1.0}), tmp_path)
    assert result.exit_code == 2 and "malformed" in result.output
    result, _ = _report(bundle, _bench(bundle, format="something else"), tmp_path)
    assert result.exit_code == 2 and "is not an edgeopt-device-bench file" in result.output
