"""Token classification (NER): per-token label agreement over real tokens only, the
metric on hand-made cases, and whole compiles of a tiny BERT and a tiny DeBERTa-v3.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO, fast_recipe
from tiny_encoders import NER_LABELS, build

import edgeopt
from edgeopt.bundle import read_manifest
from edgeopt.evaldata import EvalData
from edgeopt.graph import op_counts
from edgeopt.metrics import label_agreement, output_metrics
from edgeopt.recipe import AccuracyBudget
from edgeopt.recipe_yaml import load_recipe_file
from edgeopt.source import detect_task, inspect_model
from edgeopt.targets import target_names
from edgeopt.tasks import ENCODER_TASKS, load_torch
from edgeopt.validate import batched_outputs

TASK = "token-classification"


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    """A 2-layer BertForTokenClassification with conftest's word-level tokenizer."""
    import torch
    from conftest import _tiny_bert_config, _tokenizer
    from transformers import BertForTokenClassification

    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("tiny-ner")
    cfg = _tiny_bert_config(num_labels=len(NER_LABELS), id2label=dict(enumerate(NER_LABELS)),
                            label2id={n: i for i, n in enumerate(NER_LABELS)})
    BertForTokenClassification(cfg).eval().save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ner_task(tiny_ner):
    src = inspect_model(str(tiny_ner))
    return ENCODER_TASKS[src.task](src, load_torch(src))


# -- the metric ---------------------------------------------------------------------------
# Two rows of 4 tokens, 3 labels. Row 0: [CLS] w w [SEP]; row 1: [CLS] w [SEP] [PAD].
#   judged:  row 0 -> tokens 1, 2;  row 1 -> token 1
MASK = np.array([[0, 1, 1, 0], [0, 1, 0, 0]], dtype=bool)


def _logits(labels: list[list[int]]) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[np.asarray(labels)] * 5.0


def test_agreement_ignores_padding_and_special_tokens():
    ref = _logits([[0, 1, 2, 0], [0, 2, 0, 0]])
    # Every judged token agrees; [CLS], [SEP] and the padding disagree.
    cand = _logits([[1, 1, 2, 2], [2, 2, 1, 1]])
    assert label_agreement(ref, cand, MASK) == 1.0
    assert label_agreement(ref, cand) < 0.5  # what counting every position would say


def test_agreement_counts_each_judged_token_once():
    ref = _logits([[0, 1, 2, 0], [0, 2, 0, 0]])
    cand = _logits([[0, 1, 0, 0], [0, 2, 0, 0]])  # one of three real tokens flips
    assert label_agreement(ref, cand, MASK) == pytest.approx(2 / 3)


def test_output_metrics_read_judged_tokens_only():
    ref = _logits([[0, 1, 2, 0], [0, 2, 0, 0]])
    cand = ref.copy()
    cand[~MASK] = 1000.0  # garbage where nothing is judged (padding rows of the graph)
    m = output_metrics(ref, cand, MASK)
    assert m["max_abs_error"] == 0.0 and m["cosine_min"] == pytest.approx(1.0)
    assert output_metrics(ref, cand)["max_abs_error"] > 100


def test_scored_tokens_are_real_tokens(ner_task):
    tok = ner_task.loaded.tokenizer
    feeds = ner_task.encode(["the movie was great", "zzz"])  # "zzz" -> [UNK], a real word
    mask = ner_task.scored_tokens(feeds)
    ids = feeds["input_ids"]
    assert mask.tolist() == [[False, True, True, True, True, False],
                             [False, True, False, False, False, False]]
    assert ids[1, 1] == tok.unk_token_id and ids[0, 0] == tok.cls_token_id


def test_batches_of_different_lengths_are_padded_and_masked(ner_task):
    texts = ("the movie was great", "bad", "the plot was very slow and boring", "fun film")
    data = EvalData(texts, None, "hand-made")
    # A fake graph whose output is longer than its input, as a fixed-shape graph's is.
    def run(feeds):
        rows, seq = feeds["input_ids"].shape
        return np.broadcast_to(feeds["input_ids"][:, :, None], (rows, seq, 2)).astype(np.float32)

    out = batched_outputs(ner_task, data, lambda f: np.pad(run(f), ((0, 0), (0, 7), (0, 0))),
                          batch_size=2)
    assert out.values.shape == (4, 9, 2) and out.mask.shape == (4, 9)
    assert out.mask.sum(axis=1).tolist() == [4, 1, 7, 2]  # words per row, in data order
    first = ner_task.encode([texts[0]])["input_ids"][0]
    np.testing.assert_array_equal(out.values[0, : len(first), 0], first)


# -- detection, gates, budget -------------------------------------------------------------
def test_detected_with_its_labels(tiny_ner):
    assert detect_task("DebertaV2ForTokenClassification", "deberta-v2", "transformers") == TASK
    src = inspect_model(str(tiny_ner))
    assert src.task == TASK and src.label_names == tuple(NER_LABELS)


def test_every_target_gates_token_labels():
    # This checkout's YAML files, read directly: an installed edgeopt may ship others.
    files = sorted((REPO / "recipes" / "targets").glob("*.yaml"), key=lambda f: f.stem)
    assert [f.stem for f in files] == target_names()
    for file in files:
        gates = load_recipe_file(file).gates.for_task(TASK)
        assert gates.min_label_agreement is not None, file.stem
        if file.stem == "x86-fp32":
            assert gates.min_label_agreement == 1.0


def test_min_agreement_budget_gates_token_labels():
    assert AccuracyBudget(min_agreement=0.995).gates(TASK) == {"min_label_agreement": 0.995}


# -- whole compiles -----------------------------------------------------------------------
def test_fp32_bundle_equals_pytorch_per_token(tiny_ner, tmp_path):
    out = tmp_path / "b"
    report = edgeopt.compile(str(tiny_ner), recipe=fast_recipe("x86-fp32"), out=out)
    assert report.passed, report.failures
    m = report.parity["metrics"]
    assert m["label_agreement"] == 1.0 and m["max_abs_error"] < 1e-4
    manifest = read_manifest(out)
    assert manifest["task"] == TASK and manifest["label_names"] == NER_LABELS
    assert manifest["outputs"][0]["name"] == "logits"
    assert manifest["outputs"][0]["shape"] == ["batch", "sequence", len(NER_LABELS)]


def test_fp32_deberta_token_classifier(tmp_path):
    folder = build("deberta-v2", TASK, tmp_path / "m")
    report = edgeopt.compile(str(folder), recipe=fast_recipe("x86-fp32"), out=tmp_path / "b")
    assert report.passed, report.failures
    m = report.parity["metrics"]
    assert m["label_agreement"] == 1.0 and m["max_abs_error"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-int8", "android-int8"])
def test_int8_token_classifier_compiles(tiny_ner, tmp_path, target):
    # Random weights put many tokens near a tie between labels, so INT8 flips a few of
    # them: the gate is judged and reported, passing or not (accuracy needs real weights).
    out = tmp_path / "b"
    report = edgeopt.compile(str(tiny_ner), recipe=fast_recipe(target), out=out,
                             fail_on_parity=False)
    check = next(c for c in report.parity["gates"] if c["gate"] == "min_label_agreement")
    assert check["metric"] == "label_agreement" and check["passed"] is not None
    assert 0.9 < report.parity["metrics"]["label_agreement"] <= 1.0
    counts = op_counts(out / "model.onnx")
    # Dynamic INT8 runs integer MatMuls; static INT8 writes QDQ pairs around them.
    integer_op = {"x86-int8": "MatMulInteger", "android-int8": "QuantizeLinear"}[target]
    assert counts[integer_op] >= 2 * 3
    assert read_manifest(out)["outputs"][0]["shape"] == ["batch", "sequence", len(NER_LABELS)]


@pytest.mark.slow
def test_agreement_budget_keeps_layers_until_token_labels_agree(tiny_ner, tmp_path):
    report = edgeopt.compile(str(tiny_ner), recipe=fast_recipe("x86-int8"), out=tmp_path / "b",
                             min_agreement=0.995)
    assert report.passed and report.parity["metrics"]["label_agreement"] >= 0.995
    assert report.section("budget").kept_nodes
