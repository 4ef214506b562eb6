"""Q/K/V merged into one MatMul (quant/merge_qkv) whose input dynamic INT8 scales per
token (quant/token_scales): the float graph is unchanged by the merge, and a row's
quantized result no longer depends on the rows batched with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from helpers import REPO, fast_recipe
from onnx import TensorProto, helper, numpy_helper

import edgeopt
from edgeopt.errors import EdgeoptError
from edgeopt.graph import op_counts
from edgeopt.quant.merge_qkv import merge_qkv
from edgeopt.quant.token_scales import scale_per_token
from edgeopt.recipe_yaml import load_recipe_file
from edgeopt.runtime import make_session


def _separate_qkv(recipe, **quantize):
    return dataclasses.replace(
        recipe, optimize=dataclasses.replace(recipe.optimize, separate_qkv=True),
        quantize=dataclasses.replace(recipe.quantize, **quantize))


def _feed(rng, rows=3, length=12):
    return {"input_ids": rng.integers(5, 39, size=(rows, length)),
            "attention_mask": np.ones((rows, length), np.int64),
            "token_type_ids": np.zeros((rows, length), np.int64)}


def test_merging_qkv_keeps_the_float_outputs(tiny_classifier, tmp_path):
    recipe = _separate_qkv(fast_recipe("x86-fp32"))
    edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b")
    path = tmp_path / "b" / "model.onnx"
    model = onnx.load(str(path))
    matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    merged = merge_qkv(model)
    assert len(merged) == 2  # one MultiHeadAttention per layer
    counts = {op: sum(n.op_type == op for n in model.graph.node) for op in ("MatMul", "Split")}
    assert counts == {"MatMul": matmuls - 4, "Split": 2}  # 3 -> 1 per layer
    onnx.checker.check_model(model)
    merged_path = tmp_path / "merged.onnx"
    onnx.save(model, str(merged_path))
    feed = _feed(np.random.default_rng(0))
    before = make_session(path).run(None, feed)[0]
    after = make_session(merged_path).run(None, feed)[0]
    assert np.abs(before - after).max() < 1e-5


def _dynamic_matmul(tmp_path, weight):
    """x[B, S, K] --MatMul(W)--> y, dynamically quantized by onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", n])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, out = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    onnx.save(model, str(src))
    quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def test_per_token_scales_make_rows_independent_of_their_batch(tmp_path):
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(64, 32)).astype(np.float32)
    dynamic = _dynamic_matmul(tmp_path, weight)
    model = onnx.load(str(dynamic))
    assert scale_per_token(model, {"x"}) == 1
    per_token = tmp_path / "per-token.onnx"
    onnx.save(model, str(per_token))
    counts = op_counts(per_token)
    assert counts["DynamicQuantizeLinear"] == 0 and counts["QuantizeLinear"] == 1
    assert counts["MatMulInteger"] == 1

    quiet = rng.normal(size=(1, 8, 64)).astype(np.float32)
    loud = 40 * rng.normal(size=(1, 8, 64)).astype(np.float32)  # a batch mate 40x louder
    exact = quiet @ weight
    errors = {}
    for name, path in (("per tensor", dynamic), ("per token", per_token)):
        session = make_session(path)
        alone = session.run(None, {"x": quiet})[0]
        batched = session.run(None, {"x": np.concatenate([quiet, loud])})[0][:1]
        errors[name] = np.abs(batched - exact).max() / np.abs(exact).max()
        if name == "per token":
            np.testing.assert_array_equal(alone, batched)
            assert np.abs(alone - exact).max() / np.abs(exact).max() < 0.02
    assert errors["per token"] < errors["per tensor"] / 10


def test_per_token_attention_compiles_and_records(tiny_classifier, tmp_path):
    recipe = _separate_qkv(fast_recipe("arm64-int8"), per_token_attention=True)
    report = edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b")
    notes = next(p for p in report.passes if p["name"] == "quantize")["notes"]
    assert notes["merged_qkv"] == 2 and notes["per_token_scales"] == 2
    counts = op_counts(tmp_path / "b" / "model.onnx")
    assert counts["Split"] == 2 and counts["QuantizeLinear"] == 2
    assert report.parity["metrics"]["label_agreement"] >= 0.9


def test_per_token_attention_needs_separate_qkv(tiny_classifier, tmp_path):
    recipe = fast_recipe("arm64-int8")
    with pytest.raises(EdgeoptError, match="separate_qkv"):
        dataclasses.replace(recipe, quantize=dataclasses.replace(recipe.quantize, per_token_attention=True))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "benchmarks" / "recipes").glob("*.yaml")))
def test_benchmark_recipes_load(name):
    # The side-by-side benchmarks compile these; a renamed field must fail here first.
    recipe = load_recipe_file(REPO / "benchmarks" / "recipes" / name)
    assert recipe.name and recipe.name != "arm64-int8"
