"""arm64 parity: `edgeopt verify --platform arm64` runs a bundle on the aarch64 onnxruntime
under qemu-user against the x86 run and PyTorch.

The statistics and the missing-environment error are tested everywhere; the emulated runs
need the environment `make arm64-env` builds (CI builds it) and skip with that reason
elsewhere. Emulation is ~30x slower than native: the tiny models keep those runs short.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import fast_recipe, shared_path

import edgeopt
from edgeopt.cli import cli
from edgeopt.families import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TEXT_GENERATION
from edgeopt.platforms.arm64 import is_ready
from edgeopt.verify.compare import compare_outputs, judge
from edgeopt.verify.feeds import Batches

needs_arm64 = pytest.mark.skipif(
    not is_ready(), reason="the arm64 environment is not built: run `make arm64-env` (needs "
    "apt-get install qemu-user-static debootstrap)")


# --- statistics on known arrays (everywhere) ---------------------------------------------------

def test_cosine_of_known_vectors():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    cand = np.array([[1.0, 0.0], [1.0, 1.0], [-3.0, -4.0]])  # same, 45 degrees, opposite
    m = compare_outputs(FEATURE_EXTRACTION, ref, cand)
    assert m["cosine_min"] == pytest.approx(-1.0)
    assert m["cosine_mean"] == pytest.approx((1.0 + 2 ** -0.5 - 1.0) / 3)
    assert m["max_abs_error"] == pytest.approx(8.0)
    assert "label_agreement" not in m


def test_agreement_of_known_labels():
    ref = np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 1.0], [5.0, -5.0]])  # labels 0 1 1 0
    cand = np.array([[2.0, 1.5], [0.2, 1.0], [1.0, 0.0], [5.0, -4.0]])  # labels 0 1 0 0
    m = compare_outputs(TEXT_CLASSIFICATION, ref, cand)
    assert m["label_agreement"] == 0.75
    assert m["disagreeing"] == 1


def test_next_token_agreement_per_position():
    ref = np.eye(5)  # position i: token i
    cand = np.eye(5)[[0, 1, 2, 4, 4]]  # position 3 picks token 4
    m = compare_outputs(TEXT_GENERATION, ref, cand)
    assert m["next_token_agreement"] == pytest.approx(0.8) and m["disagreeing"] == 1


def test_identical_outputs_agree_exactly_and_shapes_must_match():
    x = np.random.default_rng(0).normal(size=(6, 4))
    m = compare_outputs(TEXT_CLASSIFICATION, x, x.copy())
    assert m["label_agreement"] == 1.0 and m["cosine_min"] == pytest.approx(1.0)
    assert m["sqnr_db"] == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        compare_outputs(TEXT_CLASSIFICATION, x, x[:5])


def test_judge_uses_agreement_for_classifiers_and_cosine_otherwise():
    checks, failures = judge(TEXT_CLASSIFICATION, {"label_agreement": 0.99, "cosine_min": 0.5},
                             min_agreement=0.995, min_cosine=0.999)
    assert checks == {"label_agreement": 0.995} and failures == ["label_agreement 0.9900 < 0.995"]
    checks, failures = judge(FEATURE_EXTRACTION, {"cosine_min": 0.9995}, 0.995, 0.999)
    assert checks == {"cosine_min": 0.999} and failures == []
    _, failures = judge(TEXT_GENERATION, {"cosine_min": float("nan"),
                                          "next_token_agreement": 1.0}, 0.995, 0.999)
    assert failures  # NaN never passes


def test_batches_put_outputs_back_in_data_order():
    # Rows 2, 0, 1 were batched in that order; the second batch was cut into two runs of a
    # fixed batch 1 plus a repeated padding row (dropped by `rows`).
    order = np.array([2, 0, 1])
    batches = Batches("y", runs=[{}, {}, {}], groups=[(0, 1, 1), (1, 2, 2)], torch_feeds=[],
                      order=order)
    outs = [np.array([[20.0]]), np.array([[0.0], [10.0]]), np.array([[10.0]])]
    np.testing.assert_array_equal(batches.assemble(outs)[:, 0], [0.0, 10.0, 20.0])
    # PyTorch ran the uncut batches: one output per batch.
    torch_outs = [np.array([[20.0]]), np.array([[0.0], [10.0]])]
    np.testing.assert_array_equal(batches.assemble(torch_outs, torch=True)[:, 0], [0.0, 10.0, 20.0])


def test_missing_environment_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_ARM64_ENV", str(tmp_path / "no-env"))
    result = CliRunner().invoke(cli, ["verify", str(tmp_path), "--platform", "arm64"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "make arm64-env" in lines[0], result.output


# --- the whole command on a stand-in platform (everywhere) -----------------------------------

@pytest.fixture(scope="module")
def tiny_classifier_bundle(tiny_classifier, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("arm64") / "b"
    edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("arm64-int8"), out=bundle)
    return bundle


@pytest.fixture
def host_as_arm64(tmp_path, monkeypatch):
    """An environment whose "arm64" python is this x86 one: the worker needs only numpy
    and onnxruntime, so the exchange, the row order and the CLI run without qemu."""
    import sys

    env = tmp_path / "host-env"
    (env / "bin").mkdir(parents=True)
    launcher = env / "bin" / "python3"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    (env / "READY").write_text("host stand-in\n")
    monkeypatch.setenv("EDGEOPT_ARM64_ENV", str(env))


def _verify(bundle, *args):
    result = CliRunner().invoke(cli, ["verify", str(bundle), "--platform", "arm64", "--json", *args])
    return result, json.loads(result.stdout) if result.exit_code in (0, 1) else None


def test_the_same_kernels_agree_exactly(tiny_classifier_bundle, host_as_arm64):
    # x86 against x86 through the .npy exchange: anything but identical outputs means rows
    # were lost, reordered or mis-fed on the way.
    result, data = _verify(tiny_classifier_bundle, "--rows", "20")
    assert result.exit_code == 0, result.output
    x86 = data["comparisons"][0]
    assert x86["label_agreement"] == 1.0 and x86["max_abs_error"] == 0.0
    assert data["rows"] == 20 and data["data"].startswith("built-in sentences")


# --- emulated runs (need `make arm64-env`) ---------------------------------------------------

@needs_arm64
def test_tiny_classifier_agrees_on_arm64(tiny_classifier_bundle):
    result, data = _verify(tiny_classifier_bundle, "--rows", "24")
    assert result.exit_code == 0, result.output
    x86, torch, x86_torch = data["comparisons"]
    assert x86["pair"].startswith("arm64 vs x86") and torch["pair"].startswith("arm64 vs PyTorch")
    assert x86_torch["pair"].startswith("x86") and x86_torch["max_abs_error"] > 0
    assert data["rows"] == 24 and data["passed"]
    assert x86["label_agreement"] >= 0.995 and x86["cosine_min"] > 0.99
    assert x86["max_abs_error"] > 0  # really another build: INT8 kernels of two ISAs differ
    assert "aarch64" in data["platform"] and data["timings"]["emulated_run_seconds"] > 0


@needs_arm64
def test_tiny_embedder_keeps_cosine_on_arm64(tiny_embedder, tmp_path):
    bundle = tmp_path / "e"
    edgeopt.compile(str(tiny_embedder), recipe=fast_recipe("arm64-int8"), out=bundle)
    result, data = _verify(bundle, "--rows", "16")
    assert result.exit_code == 0, result.output
    assert data["task"] == FEATURE_EXTRACTION and data["comparisons"][0]["cosine_min"] >= 0.999


@needs_arm64
def test_tiny_decoder_next_tokens_on_arm64(tiny_llama_lm, tmp_path):
    bundle = tmp_path / "lm"
    edgeopt.compile(str(tiny_llama_lm), recipe=fast_recipe("arm64-int4"), out=bundle)
    result, data = _verify(bundle, "--rows", "3")
    assert result.exit_code == 0, result.output
    x86 = data["comparisons"][0]
    assert data["rows"] == 3 and data["positions"] > 3  # every position of each prompt
    assert x86["cosine_min"] >= 0.999 and x86["next_token_agreement"] >= 0.9


@needs_arm64
@pytest.mark.real
@pytest.mark.slow
def test_minilm_sst2_arm64_int8_agrees_with_x86(tmp_path):
    # The CI check of issue 16: the real classifier's arm64-int8 bundle on 100 SST-2 dev rows.
    model = shared_path("models/minilm-sst2")
    dev = shared_path("data/sst2/dev.tsv")
    bundle = tmp_path / "sst2"
    edgeopt.compile(str(model), recipe=fast_recipe("arm64-int8"), out=bundle,
                    eval_data=str(dev), max_eval_rows=100)
    result, data = _verify(bundle, "--rows", "100")  # the bundle's own eval data: SST-2 dev
    assert result.exit_code == 0, result.output
    x86, torch, _ = data["comparisons"]
    assert data["rows"] == 100 and "dev.tsv" in data["data"]
    assert x86["label_agreement"] >= 0.995
    assert torch["label_agreement"] >= 0.97  # the INT8 error, shared with x86
