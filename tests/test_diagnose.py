"""edgeopt diagnose: per-tensor error between a reference and a candidate, on tiny graphs
built in code (one perturbed or quantized node must be named) and on a tiny BERT
(PyTorch vs its own export must agree to float rounding everywhere).
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.diagnose import diagnose, diagnose_compiled, diagnose_onnx, diagnose_torch_vs_onnx
from edgeopt.diagnosis import ErrorStats, layer_of
from edgeopt.errors import ModelError, UsageError
from edgeopt.evaldata import EvalData
from edgeopt.metrics import sqnr_db

# The chain every ONNX test uses; node and tensor names carry their layer like an export:
#
#   X[n,16] -> MatMul(W1) -> h1 -> Relu -> h2 -> MatMul(W2) -> h3 -> Add(B) -> Y[n,8]
#              '------------ layer.0 ---------'  '------------ layer.1 ------------'
H1, H2, H3 = "/layer.0/mm1/MatMul_output_0", "/layer.0/act/Relu_output_0", "/layer.1/mm2/MatMul_output_0"
MM1, MM2 = "/layer.0/mm1/MatMul", "/layer.1/mm2/MatMul"


def _chain(w1: np.ndarray, w2: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], [H1], name=MM1),
        helper.make_node("Relu", [H1], [H2], name="/layer.0/act/Relu"),
        helper.make_node("MatMul", [H2, "W2"], [H3], name=MM2),
        helper.make_node("Add", [H3, "B"], ["Y"], name="/layer.1/add/Add"),
    ]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(w1.astype(np.float32), "W1"),
         numpy_helper.from_array(w2.astype(np.float32), "W2"),
         numpy_helper.from_array(b.astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 32)) / 4, rng.normal(size=(32, 8)) / 4, rng.normal(size=8) / 10


def _feeds(batches: int = 3, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"X": rng.normal(size=(8, 16)).astype(np.float32)} for _ in range(batches)]


def _save(model: onnx.ModelProto, path):
    onnx.save(model, str(path))
    return path


def test_perturbed_weight_is_named_first(tmp_path):
    w1, w2, b = _weights()
    noisy = w2 + np.random.default_rng(5).normal(size=w2.shape) * 0.1 * w2.std()
    ref = _save(_chain(w1, w2, b), tmp_path / "ref.onnx")
    cand = _save(_chain(w1, noisy, b), tmp_path / "cand.onnx")
    d = diagnose_onnx(ref, cand, _feeds())
    by = {t.tensor: t for t in d.tensors}
    assert [t.tensor for t in d.tensors] == [H1, H2, H3, "Y"]  # topological order
    assert by[H1].sqnr_db == math.inf and by[H2].sqnr_db == math.inf  # upstream is exact
    assert 10 < by[H3].sqnr_db < 40 and by[H3].drop_db == math.inf
    assert by[H3].own_sqnr_db == pytest.approx(by[H3].sqnr_db)  # its inputs were exact anyway
    assert by["Y"].own_sqnr_db == math.inf  # the Add, fed the reference's h3, is exact
    assert d.first_jump is not None and d.first_jump.node == MM2
    assert d.ranked()[0].node == MM2
    assert [t.tensor for t in d.outputs] == ["Y"]
    layers = {s.layer: s for s in d.layers}
    assert set(layers) == {0, 1}
    assert layers[0].min_sqnr_db == math.inf and layers[0].tensors == 2
    assert layers[1].worst == H3 and layers[1].min_sqnr_db == pytest.approx(
        min(by[H3].sqnr_db, by["Y"].sqnr_db))
    text = d.to_markdown()
    assert f"Error first jumps at `{MM2}` (layer 1" in text
    assert "| 1 | 2 |" in text  # layer 1, two tensors
    json.dumps(d.to_dict(), allow_nan=False)  # strict JSON: infinities become null


def test_dynamic_int8_names_the_matmul_fed_by_an_outlier(tmp_path):
    # One W1 column 200x larger gives h2 one huge channel. mm1 quantizes its weights per
    # channel and is fine; mm2 quantizes h2 per tensor at run time, so every normal
    # channel collapses to a few levels: mm2 is the sensitive node.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantized(w1, w2, name):
        ref = _save(_chain(w1, w2, b), tmp_path / f"{name}.onnx")
        cand = tmp_path / f"{name}-int8.onnx"
        quantize_dynamic(str(ref), str(cand), weight_type=QuantType.QInt8, per_channel=True)
        d = diagnose_onnx(ref, cand, [{"X": np.abs(f["X"])} for f in _feeds()])
        return d, {t.tensor: t for t in d.tensors}

    w1, w2, b = _weights()
    plain, plain_by = quantized(w1, w2, "plain")
    assert plain_by[H3].own_sqnr_db > 30  # without the outlier mm2 quantizes fine
    w1[:, 0] = np.abs(w1[:, 0]) * 200
    w2[0, :] *= 1e-3  # the outlier channel barely matters downstream, as in real models
    d, by = quantized(w1, w2, "outlier")
    assert by[H3].cand_op == "MatMulInteger" and by[H1].cand_op == "MatMulInteger"
    assert by[H1].own_sqnr_db > 30 and by[H3].own_sqnr_db < 15
    assert by[H2].own_sqnr_db == math.inf  # the float Relu adds nothing
    assert d.ranked()[0].node == MM2
    assert d.first_jump is not None and d.first_jump.node == MM2
    assert {s.layer: s.worst_node for s in d.layers} == {0: MM1, 1: MM2}


def test_qdq_compares_the_dequantized_tensor(tmp_path):
    # The QDQ quantizer drops the Relu (the uint8 range clips instead) and keeps its
    # output name on the MatMul: only the dequantized value means the same as h2.
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(_feeds(4, seed=7))

        def get_next(self):
            return next(self.batches, None)

    ref = _save(_chain(*_weights()), tmp_path / "ref.onnx")
    cand = tmp_path / "qdq.onnx"
    quantize_static(str(ref), str(cand), Reader(), quant_format=QuantFormat.QDQ)
    d = diagnose_onnx(ref, cand, _feeds())
    by = {t.tensor: t for t in d.tensors}
    assert H2 in by and by[H2].sqnr_db > 20, "compared the pre-Relu MatMul output"
    assert by[H3].cand_op == "MatMul (QDQ)"


def test_error_stats_accumulate_like_one_pass():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(12, 5, 7))
    cand = ref + rng.normal(size=ref.shape) * 0.01
    stats = ErrorStats()
    stats.add(ref[:5], cand[:5])
    stats.add(ref[5:], cand[5:])
    assert stats.sqnr_db == pytest.approx(sqnr_db(ref, cand), rel=1e-9)
    assert stats.max_abs == pytest.approx(np.abs(ref - cand).max())
    assert 0.99 < stats.cosine <= 1.0 and stats.rows == 12
    masked = np.where(ref > 0, ref, -np.inf)  # equal infinities (masks) are no error
    exact = ErrorStats()
    exact.add(masked, masked.copy())
    assert exact.sqnr_db == math.inf


def test_layer_names():
    assert layer_of("/model/bert/encoder/layer.3/attention/self/query/MatMul") == 3
    assert layer_of("model.layers.11.mlp.down_proj") == 11
    assert layer_of("encoder_layer_2_out") == 2
    assert layer_of("EmbedLayerNormalization_0_output") is None


@pytest.fixture(scope="module")
def tiny_export(tiny_classifier, tmp_path_factory):
    """The tiny BERT classifier exported by edgeopt's own export pass."""
    from edgeopt.passes.export import export_encoder
    from edgeopt.recipe import ExportConfig
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch

    src = inspect_model(str(tiny_classifier))
    task = ENCODER_TASKS[src.task](src, load_torch(src))
    work = tmp_path_factory.mktemp("export")
    return task, export_encoder(task, ExportConfig(), work).path, work


TEXTS = ("the movie was great", "boring plot and bad acting", "i love this film",
         "the worst ending ever", "a very long and slow story", "fun", "it was not funny",
         "great music and great acting in a short film")


def test_torch_vs_export_agrees_everywhere(tiny_export):
    task, onnx_path, _ = tiny_export
    feeds = [task.encode(list(TEXTS[:5])), task.encode(list(TEXTS[5:]))]
    d = diagnose_torch_vs_onnx(task.export_module(), onnx_path, feeds, task.input_names)
    assert d.tensors and min(t.sqnr_db for t in d.tensors) > 60
    linear = [t for t in d.tensors if t.op == "Linear"]
    assert len(linear) >= 12, d.coverage  # of 14: q, k, v, out, up, down x 2 layers, pooler, head
    assert {"LayerNorm", "Embedding", "GELUActivation"} <= {t.op for t in d.tensors}
    assert [t.tensor for t in d.outputs] == ["logits"]
    assert d.first_jump is None and "within float rounding" in d.headline()


def test_torch_vs_fused_graph_subtracts_fused_biases(tiny_export):
    # The fused graph folds Linear biases into SkipLayerNorm/BiasGelu: the MatMul output
    # is compared with the PyTorch output minus the bias, still at float rounding.
    from edgeopt.artifact import OnnxArtifact, PassRecord
    from edgeopt.passes.optimize import optimize_encoder
    from edgeopt.recipe import OptimizeConfig

    task, onnx_path, work = tiny_export
    feeds = [task.encode(list(TEXTS))]
    fused = optimize_encoder(OnnxArtifact(onnx_path), OptimizeConfig(), work, task.src.config,
                             feeds, PassRecord("optimize", {}))
    assert fused.path != onnx_path, "fusions were rejected; the test needs a fused graph"
    d = diagnose_torch_vs_onnx(task.export_module(), fused.path, feeds, task.input_names)
    dense = [t for t in d.tensors if t.op == "Linear" and t.tensor.endswith("MatMul_output_0")]
    assert dense and min(t.sqnr_db for t in d.tensors) > 60


def test_diagnose_end_to_end_from_folders(tiny_export, tiny_classifier, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    task, onnx_path, _ = tiny_export
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(str(onnx_path), str(int8), weight_type=QuantType.QInt8)
    data = EvalData(TEXTS * 3, None, "tiny texts")
    d = diagnose(onnx_path, int8, data, rows=20, tokenizer=tiny_classifier)
    assert d.rows == 20 and d.source == "tiny texts (sample of 20)"
    assert any(t.cand_op == "MatMulInteger" for t in d.tensors)
    assert d.outputs and d.outputs[0].sqnr_db < 60  # int8 is not exact
    torch_d = diagnose(str(tiny_classifier), onnx_path, data, rows=8)
    assert torch_d.reference == str(tiny_classifier) and min(t.sqnr_db for t in torch_d.tensors) > 60
    compiled = diagnose_compiled(task, data, candidate=int8, reference=onnx_path, rows=8)
    assert compiled.candidate == "compiled model" and compiled.rows == 8


def test_diagnose_refuses_unusable_inputs(tiny_export, tiny_classifier, tmp_path):
    _, onnx_path, _ = tiny_export
    data = EvalData(TEXTS, None, "tiny texts")
    with pytest.raises(UsageError, match="--tokenizer"):
        diagnose(onnx_path, onnx_path, data)
    with pytest.raises(ModelError, match="PyTorch can only be the reference"):
        diagnose(onnx_path, str(tiny_classifier), data, tokenizer=tiny_classifier)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not an .onnx file"):
        diagnose(tmp_path / "notes.txt", onnx_path, data)
