"""`edgeopt check BUNDLE --budget FILE`: the release gate's exit codes (0 all hold, 1 a limit
broke, 2 a bad budget or bundle) and its table, on budgets derived from a real compile."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from click.testing import CliRunner

from edgeopt.cli import cli
from edgeopt.errors import BudgetError
from edgeopt.release import budget_from_dict, check_release, load_budget
from edgeopt.report_data import BundleReport, load_bundle_report


@pytest.fixture(scope="module")
def bundle(tiny_report_bundles):
    return tiny_report_bundles["x86-int8"]


@pytest.fixture(scope="module")
def measured(bundle):
    data = json.loads((bundle / "report.json").read_text())
    subject = data["bench"]["latency"][data["bench"]["subject"]]
    return {"mb": data["sizes"]["bundle model.onnx"] / 1e6, "p90": subject["p90_ms"],
            "threads": data["bench"]["config"]["threads"],
            "agreement": data["parity"]["metrics"]["label_agreement"],
            "cosine": data["parity"]["metrics"]["cosine_min"]}


def _check(bundle, budget, tmp_path):
    path = tmp_path / "budget.yaml"
    path.write_text(budget if isinstance(budget, str) else yaml.safe_dump(budget))
    return CliRunner().invoke(cli, ["check", str(bundle), "--budget", str(path)])


def test_a_budget_the_bundle_meets_exits_0(bundle, measured, tmp_path):
    budget = {"max_size_mb": measured["mb"] * 1.01,
              "latency": [{"provider": "cpu", "threads": measured["threads"],
                           "max_p90_ms": measured["p90"] * 1.01}],
              "min_agreement": measured["agreement"], "min_cosine": measured["cosine"] - 1e-4}
    result = _check(bundle, budget, tmp_path)
    assert result.exit_code == 0, result.output
    assert "all 5 limits hold" in result.output
    assert "BROKEN" not in result.output


def test_a_budget_the_bundle_misses_exits_1_naming_what_broke(bundle, measured, tmp_path):
    budget = {"max_size_mb": measured["mb"] * 0.5,  # broken
              "latency": [{"threads": measured["threads"], "max_p90_ms": measured["p90"] * 2},
                          {"threads": measured["threads"] + 5, "max_p90_ms": 1e6}],  # not measured
              "min_agreement": measured["agreement"],  # holds (>=)
              "min_accuracy": 0.5,  # the built-in sentences carry no labels
              "whole_graph": ["qnn"]}  # no placement in a compile's report
    result = _check(bundle, budget, tmp_path)
    assert result.exit_code == 1, result.output
    lines = {line.split("|")[1].strip(): line for line in result.output.splitlines()
             if line.startswith("| ") and "---" not in line}
    assert lines["model size"].rstrip().endswith("BROKEN |")
    assert f"{measured['mb']:.2f} MB" in lines["model size"]
    assert lines[f"p90 latency, cpu at {measured['threads']} threads"].endswith("| ok |")
    missing = lines[f"p90 latency, cpu at {measured['threads'] + 5} threads"]
    assert "not measured" in missing and f"cpu at {measured['threads']} threads" in missing
    assert "needs labelled eval data" in lines["accuracy"]
    assert "the bundle's report has no placement for qnn" in lines["whole graph on qnn"]
    assert lines["label agreement"].endswith("| ok |")
    assert "4 of 7 limits broken" in result.output


def test_whole_graph_reads_the_reports_placement(bundle):
    report = load_bundle_report(bundle)
    placement = {"providers": [
        {"provider": "cpu", "grade": "ok", "verdict": "runs on the CPU (40 nodes)"},
        {"provider": "nnapi", "grade": "fallbacks", "verdict": "2 partitions, 80% of nodes"}]}
    data = {**report.data, "sections": {**report.data["sections"], "placement": placement}}
    checks = check_release(BundleReport("b", data), budget_from_dict({"whole_graph": ["cpu", "nnapi"]}))
    by_limit = {c.limit: c for c in checks}
    assert by_limit["whole graph on cpu"].held
    assert not by_limit["whole graph on nnapi"].held
    assert by_limit["whole graph on nnapi"].measured == "2 partitions, 80% of nodes"


def test_a_bundle_kept_after_a_failed_gate_breaks_the_release(bundle, measured):
    report = load_bundle_report(bundle)
    failed = BundleReport("b", {**report.data, "status": "FAILED"})
    checks = check_release(failed, budget_from_dict({"max_size_mb": measured["mb"] * 2}))
    assert [c.held for c in checks] == [False, True]
    assert checks[0].limit == "compile parity gates"


@pytest.mark.parametrize("budget, says", [
    ("max_size_mb: 10\nmax_latency: 3\n", "unknown key(s) in budget: max_latency"),
    ("max_size_mb: big\n", "budget.max_size_mb must be a number"),
    ("latency:\n  - provider: cpu\n    max_p90_ms: 3\n", "latency[0] needs threads"),
    ("latency:\n  - {threads: 2, max_p90_ms: 3, provider: tpu}\n", "no execution provider named 'tpu'"),
    ("whole_graph: qnn\n", "budget.whole_graph must be a list"),
    ("min_agreement: 2\n", "min_agreement must be within [-1, 1]"),
    ("{}\n", "the budget sets no limit"),
    ("max_size_mb: [1\n", "not valid YAML"),
])
def test_a_bad_budget_file_is_one_line_exit_2(bundle, tmp_path, budget, says):
    result = _check(bundle, budget, tmp_path)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_missing_bundle_or_budget_file_exits_2(bundle, tmp_path):
    (tmp_path / "budget.yaml").write_text("max_size_mb: 10\n")
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "nope"), "--budget",
                                      str(tmp_path / "budget.yaml")])
    assert result.exit_code == 2 and "not an edgeopt bundle" in result.output
    result = CliRunner().invoke(cli, ["check", str(bundle), "--budget", str(tmp_path / "no.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_the_ci_example_budget_parses():
    from helpers import REPO

    budget = load_budget(REPO / "examples" / "ci" / "budget.yaml")
    assert budget.max_size_mb and budget.latency and budget.min_agreement
    assert dataclasses.is_dataclass(budget.latency[0])


def test_budget_errors_are_usage_errors():
    with pytest.raises(BudgetError, match="b.yaml: unknown key"):
        budget_from_dict({"nope": 1}, source="b.yaml")
