"""The CLI through click's CliRunner: what it passes to edgeopt.compile, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edgeopt.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """Replace the library entry point; the CLI's job is only to build the call."""
    calls = {}

    class FakeReport:
        passed, status, target, task, seconds, failures, bundle = True, "PASSED", "t", "x", 0.0, [], None
        parity, sizes, bench = {"metrics": {}}, {}, None

        def to_json(self):
            return json.dumps({"status": "PASSED"})

    def fake_compile(model, **kwargs):
        calls["model"], calls["kwargs"] = model, kwargs
        return FakeReport()

    monkeypatch.setattr("edgeopt.api.compile", fake_compile)
    return calls


def test_targets_lists_each_with_a_description(runner):
    result = runner.invoke(cli, ["targets"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert any(line.startswith("arm64-int8 ") and "ARM64" in line for line in lines)
    assert len(lines) >= 4


def test_compile_flags_become_the_api_call(runner, captured, tmp_path):
    result = runner.invoke(cli, [
        "compile", "./m", "--target", "arm64-int8", "-o", str(tmp_path / "o"),
        "--eval-data", "dev.tsv", "--gate", "min_label_agreement=0.98", "--gate",
        "max_accuracy_drop=off", "--force", "--allow-pickle", "--no-fail-on-parity",
        "--max-eval-rows", "100", "--calibration-data", "train.tsv", "--json"])
    assert result.exit_code == 0, result.output
    kw = captured["kwargs"]
    assert captured["model"] == "./m"
    assert kw["target"] == "arm64-int8" and kw["eval_data"] == "dev.tsv"
    assert kw["gates"] == {"min_label_agreement": 0.98, "max_accuracy_drop": None}
    assert kw["force"] and kw["allow_pickle"] and not kw["trust_remote_code"]
    assert kw["fail_on_parity"] is False and kw["max_eval_rows"] == 100
    assert kw["calibration_data"] == "train.tsv"
    assert json.loads(result.stdout)["status"] == "PASSED"


def test_bad_gate_flag_is_one_line_exit_2(runner, captured, tmp_path):
    result = runner.invoke(cli, ["compile", "m", "-t", "x86-int8", "-o", str(tmp_path / "o"),
                                 "--gate", "speed=fast"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "NAME=VALUE" in result.stderr


def _bad(runner, args, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["compile", *args, "-o", str(out)])
    return result, out


def _assert_one_line_exit_2(result, out, needle):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("edgeopt: error:") and "\n" not in err, err
    assert needle in err
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not list(out.parent.glob(".out.tmp-*"))


def test_missing_path(runner, tmp_path):
    result, out = _bad(runner, [str(tmp_path / "nope"), "-t", "x86-int8"], tmp_path)
    _assert_one_line_exit_2(result, out, "not found")


def test_folder_that_is_no_model(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result, out = _bad(runner, [str(tmp_path / "empty"), "-t", "x86-int8"], tmp_path)
    _assert_one_line_exit_2(result, out, "no config.json")


def test_unknown_target_lists_valid_ones(runner, tiny_classifier, tmp_path):
    result, out = _bad(runner, [str(tiny_classifier), "-t", "arm64-int9"], tmp_path)
    _assert_one_line_exit_2(result, out,
                            "valid targets: android-int8, arm64-int4, arm64-int4-fast, arm64-int8")


def test_malformed_eval_data(runner, tiny_classifier, tmp_path):
    data = tmp_path / "bad.tsv"
    data.write_text("review\tlabel\nfine\t1\n")
    result, out = _bad(runner, [str(tiny_classifier), "-t", "x86-int8", "--eval-data", str(data)],
                       tmp_path)
    _assert_one_line_exit_2(result, out, "no text column")


def test_unsupported_architecture(runner, tiny_classifier, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_classifier, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="whisper", architectures=["WhisperForAudioClassification"])
    (folder / "config.json").write_text(json.dumps(cfg))
    result, out = _bad(runner, [str(folder), "-t", "x86-int8", "--task", "text-classification"],
                       tmp_path)
    _assert_one_line_exit_2(result, out, "not supported")


def test_corrupt_weights(runner, tiny_classifier, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_classifier, folder)
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    result, out = _bad(runner, [str(folder), "-t", "x86-int8"], tmp_path)
    _assert_one_line_exit_2(result, out, "corrupt")


def test_pickle_weights_need_a_flag(runner, tiny_classifier, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_classifier, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    result, out = _bad(runner, [str(folder), "-t", "x86-int8"], tmp_path)
    _assert_one_line_exit_2(result, out, "--allow-pickle")


def test_existing_output_is_not_touched(runner, tiny_classifier, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = runner.invoke(cli, ["compile", str(tiny_classifier), "-t", "x86-int8", "-o", str(out)])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_debug_shows_the_traceback(runner, tmp_path):
    result = runner.invoke(cli, ["compile", str(tmp_path / "nope"), "-t", "x86-int8", "-o",
                                 str(tmp_path / "o"), "--debug"])
    assert result.exit_code != 0
    assert result.exception is not None and "not found" in str(result.exception)


def test_parity_failure_exits_1_and_says_why(runner, tiny_classifier, tmp_path):
    result = runner.invoke(cli, ["compile", str(tiny_classifier), "-t", "arm64-int4", "-o",
                                 str(tmp_path / "o"), "--gate", "min_sqnr_db=300"])
    assert result.exit_code == 1, result.output
    assert "sqnr_db" in result.stderr and "FAILED" in result.stdout
    assert (tmp_path / "o" / "report.md").is_file()
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from edgeopt.cli import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
