"""DeBERTa-v2/v3, ModernBERT and ALBERT through the whole compile, on tiny random models
built in code (tests/tiny_encoders.py): the fp32 bundle equals PyTorch, INT8 compiles to
integer ops, and each family's graph takes the inputs its model reads.
"""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from helpers import fast_recipe
from tiny_encoders import build, graph_inputs

import edgeopt
from edgeopt.bundle import read_manifest
from edgeopt.cli import cli
from edgeopt.encoder_families import ENCODER_FAMILIES
from edgeopt.families import ENCODER_TYPES
from edgeopt.graph import op_counts
from edgeopt.source import inspect_model

FAMILIES = ("deberta-v2", "modernbert", "albert")
TASKS = ("text-classification", "feature-extraction")
# What each graph takes: the tokenizers all produce token_type_ids, but only ALBERT reads
# them (DeBERTa-v3 has no segment table, ModernBERT no segment input).
INPUTS = {
    "deberta-v2": ["input_ids", "attention_mask"],
    "modernbert": ["input_ids", "attention_mask"],
    "albert": ["input_ids", "attention_mask", "token_type_ids"],
}
OUTPUTS = {"text-classification": "logits", "feature-extraction": "sentence_embedding"}
# A fusion BERT's onnxruntime rules find in each family (kept: the fused graph matches).
# ALBERT's attention is BERT-shaped; DeBERTa's disentangled and ModernBERT's rotary
# attention match no Attention pattern, their Gelus fuse.
FUSED = {"deberta-v2": "BiasGelu", "modernbert": "Gelu", "albert": "Attention"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(family, task)``: the folder of that tiny model, built once per module."""
    cache = {}

    def get(family: str, task: str):
        if (family, task) not in cache:
            cache[family, task] = build(family, task, tmp_path_factory.mktemp(family))
        return cache[family, task]

    return get


def _notes(report, stage: str) -> dict:
    return next(p["notes"] for p in report.passes if p["name"] == stage)


def test_every_encoder_type_has_a_family_adapter():
    assert set(ENCODER_FAMILIES) == set(ENCODER_TYPES)
    assert set(FAMILIES) <= set(ENCODER_TYPES)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_task_and_labels_are_detected(tiny, family, task):
    src = inspect_model(str(tiny(family, task)))
    assert (src.model_type, src.task) == (family, task)
    expected = ("negative", "positive") if task == "text-classification" else None
    assert src.label_names == expected


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_fp32_bundle_equals_pytorch(tiny, family, task, tmp_path):
    out = tmp_path / "b"
    report = edgeopt.compile(str(tiny(family, task)), recipe=fast_recipe("x86-fp32"), out=out)
    assert report.passed, report.failures
    m = report.parity["metrics"]
    assert m["max_abs_error"] < 1e-4
    assert m["cosine_min"] > 0.9999
    if task == "text-classification":
        assert m["label_agreement"] == 1.0
    manifest = read_manifest(out)
    assert [i["name"] for i in manifest["inputs"]] == INPUTS[family]
    assert [o["name"] for o in manifest["outputs"]] == [OUTPUTS[task]]
    optimize = _notes(report, "optimize")
    assert optimize["fusions"] == "applied"
    assert optimize["fused_ops"].get(FUSED[family], 0) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", TASKS)
def test_int8_bundle_compiles_to_integer_ops(tiny, family, task, tmp_path):
    out = tmp_path / "b"
    report = edgeopt.compile(str(tiny(family, task)), recipe=fast_recipe("x86-int8"), out=out,
                             fail_on_parity=False)
    assert report.status == "PASSED", report.failures
    counts = op_counts(out / "model.onnx")
    assert counts["MatMulInteger"] + counts["QAttention"] >= 2 * 3  # every layer's projections
    assert report.sizes["bundle model.onnx"] < report.sizes["onnx fp32"]
    assert graph_inputs(out) == INPUTS[family]


def _refused(args, out):
    result = CliRunner().invoke(cli, ["compile", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("edgeopt: error:") and "\n" not in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize(("model_type", "architecture", "task"), [
    ("deberta", "DebertaForSequenceClassification", None),  # DeBERTa v1: not adapted
    ("funnel", "FunnelForTokenClassification", None),
    ("llama", "LlamaForCausalLM", "token-classification"),  # a decoder forced to NER
])
def test_unsupported_model_is_refused_listing_the_families(tiny, tmp_path, model_type,
                                                           architecture, task):
    folder = tmp_path / "m"
    shutil.copytree(tiny("deberta-v2", "text-classification"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type=model_type, architectures=[architecture])
    (folder / "config.json").write_text(json.dumps(cfg))
    err = _refused([str(folder), "-t", "x86-fp32", *(["--task", task] if task else [])],
                   tmp_path / "out")
    assert f"{model_type!r}" in err and "not supported" in err
    assert all(t in err for t in FAMILIES)
