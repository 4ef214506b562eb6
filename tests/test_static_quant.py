"""Static INT8 (QDQ): the plan each target asks for, op counts on a tiny BERT, fixed
input shapes, calibration determinism, and the shipped android-int8 target on the real
fine-tuned MiniLM (the only place accuracy means anything)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import fast_recipe, shared_path

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.compiler.quantize import quant_context
from edgeopt.errors import RecipeError
from edgeopt.quant.registry import QuantContext, budget_candidates, quantize
from edgeopt.recipe import StaticInt8Config
from edgeopt.recipe_yaml import recipe_from_dict
from edgeopt.runtime import conform_feeds, fixed_input_shape, make_session, run_one
from edgeopt.targets import load_target

SENTENCES = ["the movie was great fun", "a boring and slow story", "i love the music",
             "the worst film ever", "not bad at all", "the acting is very good and the plot fast"]


@pytest.fixture(scope="module")
def tiny_task(tiny_classifier):
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch

    src = inspect_model(str(tiny_classifier))
    return ENCODER_TASKS[src.task](src, load_torch(src))


@pytest.fixture(scope="module")
def float_graphs(tiny_task, tmp_path_factory):
    """The tiny BERT exported and optimized the way each static target optimizes it."""
    from edgeopt.passes.export import export_encoder
    from edgeopt.passes.optimize import optimize_encoder

    out = {}
    for name in ("android-int8", "qnn-int8"):
        recipe = load_target(name)
        work = tmp_path_factory.mktemp(name)
        exported = export_encoder(tiny_task, recipe.export, work)
        out[name] = optimize_encoder(exported, recipe.optimize, work, tiny_task.src.config,
                                     [tiny_task.encode(SENTENCES)], PassRecord("optimize", {}))
    return out


def _calibration(task) -> QuantContext:
    return QuantContext(calibration=(task.encode(SENTENCES[:3]), task.encode(SENTENCES[3:])))


def _quantize(graph: OnnxArtifact, config: StaticInt8Config, work: Path, task) -> OnnxArtifact:
    # What the quantize stage hands the quantizer: the rows and the config's provider rules.
    context = quant_context(config, _calibration(task).calibration)
    return quantize(graph, config, work, PassRecord("quantize", {}), context)


def _dq_inputs(model: onnx.ModelProto) -> tuple[Counter, dict[str, onnx.NodeProto]]:
    """Per op type, how many of its inputs come straight from a DequantizeLinear."""
    made = {o: n for n in model.graph.node for o in n.output}
    counts: Counter = Counter()
    for n in model.graph.node:
        counts[n.op_type] += sum(1 for x in n.input if x in made and made[x].op_type == "DequantizeLinear")
    return counts, made


def test_android_int8_quantizes_projections_and_tables_only(float_graphs, tiny_task, tmp_path):
    # 2 layers x (Q, K, V, O, FFN1, FFN2) + pooler + classifier = 14 MatMuls, each reading a
    # u8 activation and an s8 per-channel weight; 3 embedding tables stored as u8. The
    # MultiHeadAttention core (activation x activation) stays float.
    config = load_target("android-int8").quantize
    out = _quantize(float_graphs["android-int8"], config, tmp_path, tiny_task)
    model = onnx.load(str(out.path))
    ops = Counter(n.op_type for n in model.graph.node)
    dq, made = _dq_inputs(model)
    assert ops["MatMul"] == 14 and dq["MatMul"] == 28
    assert ops["MultiHeadAttention"] == 2 and dq["MultiHeadAttention"] == 0
    # Activations: one Q per distinct MatMul input (Q/K/V share one) = 4 per layer + pooler
    # + classifier, plus the 3 Gather outputs.
    assert ops["QuantizeLinear"] == 2 * 4 + 2 + 3
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "MatMul":
            weight = made[n.input[1]]
            assert inits[weight.input[0]].data_type == onnx.TensorProto.INT8
            assert len(inits[weight.input[1]].dims) == 1  # one scale per output channel
            act = made[n.input[0]]
            assert inits[act.input[2]].data_type == onnx.TensorProto.UINT8
    assert fixed_input_shape(out.path) is None


def test_qnn_int8_quantizes_every_op_at_16_bits_with_a_fixed_shape(float_graphs, tiny_task, tmp_path):
    # The tiny BERT takes 64 positions, so the fixed sequence is shortened for it.
    config = dataclasses.replace(load_target("qnn-int8").quantize, fixed_sequence=32)
    out = _quantize(float_graphs["qnn-int8"], config, tmp_path, tiny_task)
    model = onnx.load(str(out.path))
    ops = Counter(n.op_type for n in model.graph.node)
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)  # HTP: standard ops only
    dq, made = _dq_inputs(model)
    # Every MatMul, attention scores included, reads two dequantized inputs.
    assert ops["MatMul"] == 18 and dq["MatMul"] == 36
    for op in ("LayerNormalization", "Softmax", "Gelu", "Tanh"):
        assert ops[op] and dq[op] >= ops[op], op
    inits = {t.name: t for t in model.graph.initializer}
    # Activations are u16, except embedding lookups, which carry their 8-bit table's type.
    narrow = [made[n.input[0]].op_type for n in model.graph.node if n.op_type == "QuantizeLinear"
              and inits[n.input[2]].data_type != onnx.TensorProto.UINT16]
    assert narrow and set(narrow) == {"Gather"}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in made and made[n.input[1]].input[0] in inits:
            w = made[n.input[1]]
            assert inits[w.input[0]].data_type == onnx.TensorProto.INT8
            # Per output channel (axis 1 of [K, N]): HTP runs A16 x per-channel INT8 MatMul.
            assert list(inits[w.input[1]].dims) == [inits[w.input[0]].dims[1]]
            assert onnx.helper.get_attribute_value(w.attribute[0]) == 1
        if n.op_type == "Tanh":  # HTP's fixed 16-bit Tanh output scale
            q = next(m for m in model.graph.node
                     if m.op_type == "QuantizeLinear" and m.input[0] == n.output[0])
            assert onnx.numpy_helper.to_array(inits[q.input[1]]) == pytest.approx(1 / 32768)
    # The additive attention mask (float32 min where masked) is quantized over +-100, not
    # over +-3.4e38: the Softmax input keeps its resolution.
    for n in model.graph.node:
        if n.op_type == "Softmax":
            q = made[made[n.input[0]].input[0]]
            assert q.op_type == "QuantizeLinear"
            assert onnx.numpy_helper.to_array(inits[q.input[1]]) == pytest.approx(200 / 65535, rel=1e-3)
    # Word embeddings stay 8-bit under 16-bit activations.
    assert all(t.data_type != onnx.TensorProto.UINT16 for t in inits.values() if len(t.dims) == 2)
    assert fixed_input_shape(out.path) == (1, 32)


def test_fixed_shape_graph_runs_any_batch(float_graphs, tiny_task, tmp_path):
    config = dataclasses.replace(load_target("android-int8").quantize, fixed_batch=1, fixed_sequence=24)
    out = _quantize(float_graphs["android-int8"], config, tmp_path, tiny_task)
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(out.path)).graph.input] == [[1, 24]] * 3
    feeds = tiny_task.encode(SENTENCES)
    session = make_session(out.path)
    logits = run_one(session, feeds)  # rows padded to 24 and run one at a time
    assert logits.shape == (len(SENTENCES), 2)
    one = run_one(session, tiny_task.encode(SENTENCES[:1]))
    np.testing.assert_allclose(one[0], logits[0], atol=1e-5)
    reference = run_one(make_session(float_graphs["android-int8"].path), feeds)
    np.testing.assert_allclose(logits, reference, atol=0.05)
    # Longer inputs than the fixed sequence are refused, not silently cut.
    with pytest.raises(Exception, match="fixed to sequences of 24"):
        conform_feeds([{"input_ids": np.ones((1, 30), np.int64),
                        "attention_mask": np.ones((1, 30), np.int64)}], (1, 24))


def test_calibration_is_deterministic(float_graphs, tiny_task, tmp_path):
    for calibration in ("minmax", "percentile", "entropy"):
        config = dataclasses.replace(load_target("android-int8").quantize, calibration=calibration)
        a = _quantize(float_graphs["android-int8"], config, tmp_path / f"{calibration}-a", tiny_task)
        b = _quantize(float_graphs["android-int8"], config, tmp_path / f"{calibration}-b", tiny_task)
        assert a.path.read_bytes() == b.path.read_bytes(), calibration


def test_calibration_cache_gives_the_same_model(float_graphs, tiny_task, tmp_path):
    config = load_target("android-int8").quantize
    context = dataclasses.replace(_calibration(tiny_task), cache_dir=tmp_path / "cache")
    graph = float_graphs["android-int8"]
    first = quantize(graph, config, tmp_path / "a", PassRecord("q", {}), context)
    assert len(list((tmp_path / "cache").glob("ranges-*.json"))) == 1
    again = quantize(graph, config, tmp_path / "b", PassRecord("q", {}), context)
    assert first.path.read_bytes() == again.path.read_bytes()


def test_int16_nodes_widen_only_their_inputs(float_graphs, tiny_task, tmp_path):
    graph = float_graphs["android-int8"]
    config = load_target("android-int8").quantize
    units = budget_candidates(graph.path, config)
    qkv = next(u for u in units if len(u.nodes) == 3)  # Q, K and V read one tensor
    assert all("/attention/self/" in n for n in qkv.nodes)
    out = _quantize(graph, config.with_kept(qkv.nodes), tmp_path, tiny_task)
    model = onnx.load(str(out.path))
    inits = {t.name: t for t in model.graph.initializer}
    wide = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
            and inits[n.input[2]].data_type == onnx.TensorProto.UINT16]
    assert wide == [qkv.inputs[0]]


def test_static_config_validation():
    base = {"name": "r", "description": "d"}
    r = recipe_from_dict(base | {"quantize": {"method": "static-int8", "calibration": "entropy",
                                              "int16_op_types": ["MatMul"]}})
    assert isinstance(r.quantize, StaticInt8Config) and r.quantize.int16_op_types == ("MatMul",)
    for bad, message in [({"calibration": "kl"}, "quantize.calibration"),
                         ({"activation_type": "int4"}, "quantize.activation_type"),
                         ({"fixed_batch": 1}, "go together"),
                         ({"provider_rules": "tpu"}, "provider_rules"),
                         ({"percentile": 100.0}, "percentile")]:
        with pytest.raises(RecipeError, match=message):
            recipe_from_dict(base | {"quantize": {"method": "static-int8", **bad}})


def test_qnn_target_spells_out_the_provider_config():
    from edgeopt.providers.qnn import HTP_CONFIG

    assert load_target("qnn-int8").quantize == HTP_CONFIG


def test_fixed_sequence_longer_than_the_model_is_refused(tiny_classifier, tmp_path):
    import edgeopt

    with pytest.raises(RecipeError, match="fixed_sequence 128 is longer"):
        edgeopt.compile(tiny_classifier, recipe=fast_recipe("qnn-int8"), out=tmp_path / "o")


@pytest.mark.real
@pytest.mark.slow
def test_android_int8_keeps_sst2_accuracy(tmp_path):
    # Real fine-tuned MiniLM, 872 SST-2 dev rows, 256 calibration rows from train.
    import edgeopt

    model = shared_path("models/minilm-sst2")
    report = edgeopt.compile(model, target="android-int8", out=tmp_path / "b",
                             eval_data=shared_path("data/sst2/dev.tsv"),
                             calibration_data=shared_path("data/sst2/train.tsv"),
                             fail_on_parity=False)
    m = report.parity["metrics"]
    assert m["accuracy_reference"] == pytest.approx(0.8372, abs=1e-3)
    assert m["accuracy_drop"] <= 0.005 and m["label_agreement"] >= 0.985
    assert report.sizes["bundle model.onnx"] <= 25e6
    assert report.passed
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["recipe"]["quantize"]["method"] == "static-int8"


@pytest.mark.real
@pytest.mark.slow
def test_android_int8_keeps_minilm_embeddings(minilm_embedder, tmp_path):
    import edgeopt

    report = edgeopt.compile(minilm_embedder, target="android-int8", out=tmp_path / "e",
                             eval_data=shared_path("data/sst2/dev.tsv"),
                             calibration_data=shared_path("data/sst2/train.tsv"),
                             fail_on_parity=False)
    assert report.parity["metrics"]["cosine_min"] >= 0.98 and report.passed
    assert report.sizes["bundle model.onnx"] <= 25e6
