"""The whole compile on tiny random models: bundle contents, op counts, float parity,
failing gates. Accuracy claims are not made here (random weights hide quantization loss).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import fast_recipe, nbits_projections

import edgeopt
from edgeopt.bundle import read_manifest
from edgeopt.errors import OutputExistsError, ParityError
from edgeopt.graph import float_weight_matmuls, node_attrs, op_counts


@pytest.fixture(scope="module")
def fp32_bundle(tiny_classifier, tmp_path_factory, request):
    out = tmp_path_factory.mktemp("b") / "bundle"
    report = edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"), out=out)
    return out, report


def test_fp32_bundle_is_complete_and_exact(fp32_bundle, tiny_classifier):
    out, report = fp32_bundle
    assert report.passed and report.bundle == str(out)
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "manifest.json", "report.json", "report.md", "tokenizer.json"} <= names
    assert not list(out.parent.glob(".bundle.tmp-*")), "staging folder left behind"
    m = report.parity["metrics"]
    assert m["max_abs_error"] < 1e-4 and m["label_agreement"] == 1.0
    stages = [p["name"] for p in report.passes]
    assert stages == ["load", "export", "optimize", "quantize", "validate", "benchmark"]
    assert all(p["seconds"] >= 0 for p in report.passes)


def test_manifest_describes_the_graph(fp32_bundle, tiny_classifier):
    out, report = fp32_bundle
    manifest = read_manifest(out)  # verifies every sha256
    assert manifest["task"] == "text-classification"
    assert manifest["label_names"] == ["negative", "positive"]
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["inputs"][0]["shape"] == ["batch", "sequence"]
    assert manifest["inputs"][0]["dtype"] == "int64"
    assert manifest["outputs"][0]["name"] == "logits"
    assert set(manifest["versions"]) >= {"torch", "transformers", "onnx", "onnxruntime"}
    assert manifest["source_weights_sha256"] == report.source["weights_sha256"]
    assert set(manifest["files"]) >= {"model.onnx", "tokenizer.json", "report.json"}


def test_bundle_runs_from_its_own_files(fp32_bundle, tiny_classifier):
    # What an app does: load the tokenizer and the graph from the bundle alone.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, _ = fp32_bundle
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(["the movie was great", "boring plot and bad acting ever"], padding=True,
              return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"))
    logits = sess.run(None, {k: enc[k].astype(np.int64) for k in
                             ("input_ids", "attention_mask", "token_type_ids")})[0]
    import torch

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_existing_output_is_refused_then_replaced_with_force(fp32_bundle, tiny_classifier):
    out, _ = fp32_bundle
    before = (out / "model.onnx").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force"):
        edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"), out=out)
    assert (out / "model.onnx").stat().st_mtime_ns == before
    edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"), out=out, force=True)
    assert read_manifest(out)["target"] == "x86-fp32"


def test_int8_quantizes_every_weight_matmul_and_the_embeddings(tiny_classifier, tmp_path):
    report = edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-int8"),
                             out=tmp_path / "b")
    path = tmp_path / "b" / "model.onnx"
    counts = op_counts(path)
    # Per layer: the fused QKV Attention -> QAttention, then attention output, FFN in and
    # FFN out -> MatMulInteger; plus pooler and classifier (Gemm in the export, rewritten).
    assert counts["QAttention"] == 2
    assert counts["MatMulInteger"] == 2 * 3 + 2
    assert counts["QEmbedLayerNormalization"] == 1  # the int8 embedding tables
    # Float weight MatMuls left are only the narrow outlier-channel sides.
    assert all(n.startswith("outlier_split_") for n in float_weight_matmuls(path))
    assert report.passes[3]["notes"]["calibration_rows"] > 0
    size = report.sizes
    assert size["bundle model.onnx"] < 0.5 * size["onnx fp32"]


def test_int4_uses_matmulnbits_and_quantized_embeddings(tiny_classifier, tmp_path):
    edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("arm64-int4"), out=tmp_path / "b")
    path = tmp_path / "b" / "model.onnx"
    counts = op_counts(path)
    # 2 layers x (q, k, v, attn-out, ffn-in, ffn-out) + pooler + classifier (exported as
    # Gemm and rewritten first): attention fusion is off so none hides inside Attention.
    assert len(nbits_projections(path)) == 14
    assert counts["MatMulNBits"] == 10  # q, k and v read one input: merged into one per layer
    assert float_weight_matmuls(path) == []
    assert counts["GatherBlockQuantized"] == 3  # word, position and token-type tables


def test_embedder_bundle_pools_inside_the_graph(tiny_embedder, tmp_path):
    report = edgeopt.compile(str(tiny_embedder), recipe=fast_recipe("x86-fp32"), out=tmp_path / "e")
    manifest = read_manifest(tmp_path / "e")
    assert manifest["pooling"] == "mean" and manifest["normalized"] is True
    assert manifest["outputs"][0]["name"] == "sentence_embedding"
    assert manifest["outputs"][0]["shape"][0] == "batch"
    assert report.parity["metrics"]["cosine_min"] > 0.9999


def test_failed_gate_raises_with_every_failure_and_keeps_only_the_report(tiny_classifier, tmp_path):
    recipe = fast_recipe("arm64-int4").with_gates(
        "text-classification", min_label_agreement=1.0, min_sqnr_db=200.0, max_abs_error=0.0)
    out = tmp_path / "b"
    with pytest.raises(ParityError) as info:
        edgeopt.compile(str(tiny_classifier), recipe=recipe, out=out)
    failures = info.value.failures
    assert any("sqnr_db" in f for f in failures) and any("max_abs_error" in f for f in failures)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "FAILED"
    markdown = (out / "report.md").read_text()
    assert "FAILED" in markdown
    # The report says where the error enters, not only that a gate failed.
    assert "## Where the error comes from" in markdown
    assert "diagnose" in [p["name"] for p in report["passes"]]


def test_no_fail_on_parity_keeps_the_bundle_marked_failed(tiny_classifier, tmp_path):
    recipe = fast_recipe("arm64-int4").with_gates("text-classification", min_sqnr_db=200.0)
    report = edgeopt.compile(str(tiny_classifier), recipe=recipe, out=tmp_path / "b",
                             fail_on_parity=False)
    assert report.status == "FAILED"
    assert read_manifest(tmp_path / "b")["parity"] == "failed"


def test_source_folder_is_never_modified(tiny_classifier, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_classifier.iterdir()}
    edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-int8"), out=tmp_path / "b")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_classifier.iterdir()} == before


def test_a_handful_of_eval_rows_is_enough(tiny_classifier, tmp_path):
    # Five rows fill one fusion-check batch and leave the second empty.
    from edgeopt.evaldata import EvalData

    rows = EvalData(("a good film", "a bad film", "fun", "boring story", "i love it"), None, "five")
    report = edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"),
                             out=tmp_path / "b", eval_data=rows)
    assert report.passed and report.parity["rows"] == 5


def test_accurate_int8_embedder_reaches_every_matmul_and_table(tiny_embedder, tmp_path):
    # arm64-int8-accurate: Q/K/V as MatMuls beside MultiHeadAttention, tables as Gathers,
    # so every weight is 8-bit MatMulNBits or an 8-bit lookup and no activation is scaled
    # per tensor (no DynamicQuantizeLinear).
    report = edgeopt.compile(str(tiny_embedder), recipe=fast_recipe("arm64-int8-accurate"),
                             out=tmp_path / "e")
    path = tmp_path / "e" / "model.onnx"
    counts = op_counts(path)
    assert float_weight_matmuls(path) == []
    assert counts["MultiHeadAttention"] == 2 and counts.get("DynamicQuantizeLinear", 0) == 0
    lookups = [n for n in onnx.load(str(path)).graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(lookups) == 3  # word, position and token-type tables
    assert all(node_attrs(n)["bits"] == 8 and node_attrs(n)["block_size"] == 32 for n in lookups)
    notes = next(p for p in report.passes if p["name"] == "quantize")["notes"]
    assert notes["bits"] == {"4": 0, "8": len(nbits_projections(path))} and notes["eight_bit_tables"] == 3
    assert report.passed and report.parity["metrics"]["cosine_min"] > 0.999
