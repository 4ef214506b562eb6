"""The prune stage on tiny models: exact shapes and parameter counts, scores that find
dead units, exact save/reload (edgeopt's loader, and plain transformers where the config
can say the shape), per-layer head counts through export and fusion, decoders' layer
dropping and FFN pruning through the KV-cache export, and one-line errors for bad targets.

The tiny BERT is initialised wide (0.5) so its attention is far from uniform: with the
default 0.02 every head attends evenly and a wrong head split would still match."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import onnx
import pytest
import torch
from conftest import _tiny_bert_config, _tokenizer
from helpers import fast_recipe

import edgeopt
from edgeopt.artifact import LoadedModel, PassRecord
from edgeopt.errors import ModelError, RecipeError
from edgeopt.evaldata import EvalData
from edgeopt.prepare.prune import prune
from edgeopt.recipe_prepare import PruneConfig
from edgeopt.recipe_yaml import recipe_from_dict

TEXTS = ("the movie is good", "a bad film and a very long boring plot", "i love this story",
         "the acting was terrible", "fun and fast", "not the best ending ever") * 4
HIDDEN, INTER, HEADS, SIZE = 64, 128, 4, 16


@pytest.fixture(scope="module")
def bert() -> LoadedModel:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    cfg = _tiny_bert_config(num_labels=2, initializer_range=0.5,
                            id2label={0: "negative", 1: "positive"},
                            label2id={"negative": 0, "positive": 1})
    return LoadedModel(BertForSequenceClassification(cfg).eval(), _tokenizer())


def _ctx(texts=TEXTS, labels=None, train_data=None) -> types.SimpleNamespace:
    data = EvalData(tuple(texts), labels, "test rows")
    return types.SimpleNamespace(request=types.SimpleNamespace(train_data=train_data),
                                 inputs=types.SimpleNamespace(calibration=data),
                                 record=PassRecord("prepare:prune", {}))


def _feeds(tokenizer, texts=TEXTS[:4]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(list(texts), padding=True, return_tensors="pt"))


def _bert_params(heads: list[int], widths: list[int], vocab: int, positions: int = 64) -> int:
    """BERT-for-classification parameter count for these per-layer shapes."""
    emb = (vocab + positions + 2) * HIDDEN + 2 * HIDDEN
    layers = sum(3 * (HIDDEN * h * SIZE + h * SIZE) + h * SIZE * HIDDEN + HIDDEN + 2 * HIDDEN
                 + HIDDEN * w + w + w * HIDDEN + HIDDEN + 2 * HIDDEN
                 for h, w in zip(heads, widths, strict=True))
    return emb + layers + HIDDEN * HIDDEN + HIDDEN + HIDDEN * 2 + 2


def test_per_layer_prune_has_exact_shapes_and_parameter_count(bert):
    ctx = _ctx()
    out = prune(bert, PruneConfig(heads_per_layer=(0.5, 0.25), ffn_per_layer=(0.5, 0.75)), None, ctx)
    layers = out.model.bert.encoder.layer
    assert [la.attention.self.query.weight.shape for la in layers] == [(32, 64), (48, 64)]
    assert [la.attention.output.dense.weight.shape for la in layers] == [(64, 32), (64, 48)]
    assert [la.intermediate.dense.weight.shape for la in layers] == [(64, 64), (32, 64)]
    assert [la.output.dense.weight.shape for la in layers] == [(64, 64), (64, 32)]
    assert out.parameter_count() == _bert_params([2, 3], [64, 32], bert.model.config.vocab_size)
    assert bert.parameter_count() == _bert_params([4, 4], [128, 128], bert.model.config.vocab_size)
    assert out.model.config.edgeopt_pruning == {"version": 1, "layout": "encoder", "head_size": 16,
                                                "heads": [2, 3], "intermediate": [64, 32]}
    assert ctx.record.notes["heads_per_layer"] == "[4, 4] -> [2, 3]"
    assert "Taylor" in ctx.record.notes["score"] and "test rows" in ctx.record.notes["data"]
    assert 0.0 <= ctx.record.notes["agreement_with_unpruned_on_scoring_rows"] <= 1.0
    # The input model is untouched (the driver keeps it as the record's input).
    assert bert.model.bert.encoder.layer[0].attention.self.query.out_features == 64
    assert all(p.grad is None for p in bert.model.parameters())
    out.model(**_feeds(bert.tokenizer))  # still runs


def test_taylor_score_prunes_a_dead_head_and_dead_neurons_first(bert):
    import copy

    model = copy.deepcopy(bert.model)
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():  # head 2's context and neurons 0..31 feed nothing onward
        layer.attention.output.dense.weight[:, 2 * SIZE:3 * SIZE] = 0
        layer.output.dense.weight[:, :32] = 0
    out = prune(LoadedModel(model, bert.tokenizer), PruneConfig(heads=0.25, ffn=0.25), None, _ctx())
    kept = out.model.bert.encoder.layer[0]
    # 3 heads kept, and head 2's weights are not among them.
    q = layer.attention.self.query.weight
    kept_rows = {tuple(r.tolist()) for r in kept.attention.self.query.weight}
    assert kept.attention.self.query.out_features == 3 * SIZE
    assert not any(tuple(r.tolist()) in kept_rows for r in q[2 * SIZE:3 * SIZE])
    assert kept.intermediate.dense.out_features == 96
    dead = {tuple(r.tolist()) for r in layer.intermediate.dense.weight[:32]}
    assert not dead & {tuple(r.tolist()) for r in kept.intermediate.dense.weight}


def test_pruned_folder_reloads_bit_exactly(bert, tmp_path):
    from transformers import BertForSequenceClassification

    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    out = prune(bert, PruneConfig(heads_per_layer=(0.5, 0.25), ffn_per_layer=(0.5, 0.75)), None, _ctx())
    out.model.save_pretrained(tmp_path / "p")
    bert.tokenizer.save_pretrained(tmp_path / "p")
    again = load_torch(inspect_model(str(tmp_path / "p")))
    a, b = out.model.state_dict(), again.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    feeds = _feeds(bert.tokenizer)
    with torch.no_grad():
        assert torch.equal(out.model(**feeds).logits, again.model(**feeds).logits)
    # Plain transformers cannot express per-layer heads: it refuses rather than guess.
    with pytest.raises(RuntimeError):
        BertForSequenceClassification.from_pretrained(tmp_path / "p")


def test_uniform_ffn_prune_reloads_in_plain_transformers(bert, tmp_path):
    from transformers import BertForSequenceClassification

    ctx = _ctx()
    out = prune(bert, PruneConfig(ffn=0.5), None, ctx)
    assert out.model.config.intermediate_size == 64
    assert ctx.record.notes["reload"].startswith("plain transformers")
    out.model.save_pretrained(tmp_path / "u")
    plain = BertForSequenceClassification.from_pretrained(tmp_path / "u").eval()
    a, b = out.model.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_that_do_not_fit_the_record_are_refused(bert, tmp_path):
    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    out = prune(bert, PruneConfig(heads_per_layer=(0.5, 0.25)), None, _ctx())
    out.model.config.edgeopt_pruning = {**out.model.config.edgeopt_pruning, "heads": [3, 3]}
    out.model.save_pretrained(tmp_path / "bad")
    bert.tokenizer.save_pretrained(tmp_path / "bad")
    with pytest.raises(ModelError, match="edgeopt_pruning"):
        load_torch(inspect_model(str(tmp_path / "bad")))


@pytest.mark.parametrize("separate_qkv", [False, True])  # Attention; MultiHeadAttention
def test_export_and_fusion_keep_each_layers_head_count(separate_qkv, bert, tmp_path):
    from edgeopt.passes.export import export_encoder
    from edgeopt.passes.optimize import optimize_encoder
    from edgeopt.recipe import ExportConfig, OptimizeConfig
    from edgeopt.runtime import make_session, run_one
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS

    out = prune(bert, PruneConfig(heads_per_layer=(0.5, 0.25), ffn=0.5), None, _ctx())
    out.model.save_pretrained(tmp_path / "p")
    bert.tokenizer.save_pretrained(tmp_path / "p")
    src = inspect_model(str(tmp_path / "p"))
    task = ENCODER_TASKS[src.task](src, out)
    exported = export_encoder(task, ExportConfig(), tmp_path)
    feeds = task.encode(list(TEXTS[:6]))
    with torch.no_grad():
        ref = out.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(run_one(make_session(exported.path), feeds), ref, atol=1e-4)
    record = PassRecord("optimize", {})
    fused = optimize_encoder(exported, OptimizeConfig(separate_qkv=separate_qkv), tmp_path,
                             out.model.config.to_dict(), [feeds], record)
    assert record.notes["fusions"] == "applied"
    heads = [next(a.i for a in n.attribute if a.name == "num_heads")
             for n in onnx.load(str(fused.path)).graph.node
             if n.op_type in ("Attention", "MultiHeadAttention")]
    assert heads == [2, 3]
    np.testing.assert_allclose(run_one(make_session(fused.path), feeds), ref, atol=1e-4)


@pytest.mark.parametrize("target", ["x86-int8", "android-int8"])  # dynamic; static QDQ
def test_compile_with_a_prune_stage_passes_its_gates(target, tiny_classifier, tmp_path):
    recipe = dataclasses.replace(fast_recipe(target),
                                 prepare=(PruneConfig(heads_per_layer=(0.5, 0.25), ffn=0.5),))
    report = edgeopt.compile(str(tiny_classifier), recipe=recipe, out=tmp_path / "b")
    assert report.passed
    names = [p["name"] for p in report.passes]
    assert names[:3] == ["load", "prepare:prune", "export"]
    notes = report.passes[1]["notes"]
    assert notes["heads_per_layer"] == "[4, 4] -> [2, 3]"
    optimize = report.passes[names.index("optimize")]["notes"]
    if optimize.get("fusions") != "disabled by recipe":
        fused = optimize["fused_ops"]
        assert optimize["fusions"] == "applied"
        assert fused.get("Attention", 0) + fused.get("MultiHeadAttention", 0) == 2


# --- decoders -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(tiny_llama_lm) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return LoadedModel(AutoModelForCausalLM.from_pretrained(tiny_llama_lm).eval(),
                       AutoTokenizer.from_pretrained(tiny_llama_lm))


def _lm_ctx() -> types.SimpleNamespace:
    from importlib import resources

    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    inputs = types.SimpleNamespace(calibration_text=None, calibration_source=None,
                                   text=text, source="sentences.txt")
    return types.SimpleNamespace(request=types.SimpleNamespace(train_data=None), inputs=inputs,
                                 record=PassRecord("prepare:prune", {}))


def test_decoder_drop_layer_and_ffn_prune_export_equals_pytorch(llama, tmp_path):
    import copy

    from edgeopt.decoder.export import export_decoder
    from edgeopt.decoder.generate import OnnxCausalLM
    from edgeopt.recipe import ExportConfig

    # Three layers, so one is dropped and two are renumbered.
    model = copy.deepcopy(llama.model)
    model.model.layers.append(copy.deepcopy(model.model.layers[1]))
    model.config.num_hidden_layers = 3
    model.model.layers[2].self_attn.layer_idx = 2
    ctx = _lm_ctx()
    cfg = PruneConfig(drop_layers=1, ffn_per_layer=(0.5, 0.25), seq_len=32, max_rows=8)
    out = prune(LoadedModel(model, llama.tokenizer), cfg, None, ctx)
    assert out.model.config.num_hidden_layers == 2 and len(out.model.model.layers) == 2
    assert [la.self_attn.layer_idx for la in out.model.model.layers] == [0, 1]
    assert [la.mlp.down_proj.weight.shape for la in out.model.model.layers] == [(64, 64), (64, 96)]
    assert out.model.config.edgeopt_pruning["intermediate"] == [64, 96]
    assert "block influence" in ctx.record.notes["score"]
    assert " -> " in ctx.record.notes["perplexity_on_scoring_text"]
    path, io = export_decoder(out, ExportConfig(), tmp_path)
    lm = OnnxCausalLM.from_file(path.path, io, threads=1)
    ids = np.arange(1, 13, dtype=np.int64)[None] * 7 % io.vocab_size
    mask = np.ones_like(ids)
    pos = np.arange(ids.shape[1], dtype=np.int64)[None]
    logits, _ = lm.forward(ids, mask, pos, io.empty_past(1))
    with torch.no_grad():
        ref = out.model(input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_decoder_per_layer_ffn_reloads_bit_exactly(llama, tmp_path):
    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    cfg = PruneConfig(ffn_per_layer=(0.5, 0.25), seq_len=32, max_rows=4)
    out = prune(llama, cfg, None, _lm_ctx())
    out.model.save_pretrained(tmp_path / "lm")
    llama.tokenizer.save_pretrained(tmp_path / "lm")
    again = load_torch(inspect_model(str(tmp_path / "lm")))
    a, b = out.model.state_dict(), again.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # The tied LM head is still tied after the rebuild.
    assert again.model.lm_head.weight.data_ptr() == again.model.model.embed_tokens.weight.data_ptr()


# --- bad targets ----------------------------------------------------------------------------

_BASE = {"name": "r", "description": "d"}


@pytest.mark.parametrize("stage, message", [
    ({"heads": 1.0}, "fraction to remove"),
    ({"ffn": -0.1}, "fraction to remove"),
    ({"heads": 0.5, "heads_per_layer": [0.5, 0.5]}, "not both"),
    ({}, "needs a target"),
    ({"ffn": 0.5, "score": "magnitude"}, "score must be one of"),
    ({"heads": "half"}, "must be a number"),
])
def test_bad_targets_are_one_line_recipe_errors(stage, message):
    with pytest.raises(RecipeError, match=message) as info:
        recipe_from_dict({**_BASE, "prepare": [{"stage": "prune", **stage}]})
    assert "\n" not in str(info.value)


def test_targets_that_do_not_fit_the_model_are_refused(bert, llama):
    with pytest.raises(RecipeError, match="heads_per_layer has 3 entries; the model has 2"):
        prune(bert, PruneConfig(heads_per_layer=(0.5, 0.5, 0.5)), None, _ctx())
    with pytest.raises(RecipeError, match="attention heads are not pruned"):
        prune(llama, PruneConfig(heads=0.5), None, _lm_ctx())
    with pytest.raises(RecipeError, match="would leave no layer"):
        prune(llama, PruneConfig(drop_layers=2), None, _lm_ctx())
    with pytest.raises(RecipeError, match="drop_layers is for decoders"):
        prune(bert, PruneConfig(drop_layers=1), None, _ctx())


def test_unsupported_model_types_are_named(tiny_gpt2_lm):
    from transformers import AutoModelForCausalLM

    gpt2 = LoadedModel(AutoModelForCausalLM.from_pretrained(tiny_gpt2_lm), None)
    with pytest.raises(RecipeError, match="supports model types bert, roberta") as info:
        prune(gpt2, PruneConfig(ffn=0.5), None, _lm_ctx())
    assert "\n" not in str(info.value)


def test_scores_read_train_data_with_unlabelled_rows(bert, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(
        f"{t}\t{'' if i % 2 else i % 3 % 2}\n" for i, t in enumerate(TEXTS)))
    ctx = _ctx(texts=("unused",), train_data=train)
    out = prune(bert, PruneConfig(ffn=0.25, max_rows=12), None, ctx)
    assert ctx.record.notes["data"] == "--train-data train.tsv, 12 rows"
    assert out.model.config.intermediate_size == 96


def test_the_record_names_the_loss_an_embedder_is_scored_by(bert):
    ctx = _ctx()
    ctx.request.src = types.SimpleNamespace(task="feature-extraction")
    prune(bert, PruneConfig(ffn=0.5), None, ctx)
    score = ctx.record.notes["score"]
    assert "pooled embedding" in score and "cross-entropy" not in score
