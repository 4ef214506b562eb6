"""cuda-fp16 on a tiny model: it compiles here on the CPU provider, passes its gates, and
its graph holds fp16 weights behind fp32 inputs and outputs."""

from __future__ import annotations

import onnx
from helpers import REPO

import edgeopt
from edgeopt.recipe import BenchConfig, Float16Config
from edgeopt.recipe_yaml import load_recipe_file


def test_cuda_fp16_compiles_with_fp32_io(tiny_classifier, tmp_path):
    import dataclasses

    recipe = load_recipe_file(REPO / "recipes" / "targets" / "cuda-fp16.yaml")
    assert isinstance(recipe.quantize, Float16Config) and recipe.quantize.keep_io_types
    assert recipe.providers[0] == "CUDAExecutionProvider"
    recipe = dataclasses.replace(recipe, bench=BenchConfig(seq_len=16, warmup=1, repeats=3,
                                                           torch_baseline=False))
    report = edgeopt.compile(str(tiny_classifier), recipe=recipe, out=tmp_path / "b")
    assert report.passed
    graph = onnx.load(str(tmp_path / "b" / "model.onnx")).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.INT64] * 3
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    weights = [t for t in graph.initializer if len(t.dims) == 2 and min(t.dims) > 1]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    # half the bytes of the fp32 export, give or take the Casts
    assert report.sizes["bundle model.onnx"] < 0.6 * report.sizes["onnx fp32"]
    assert report.parity["metrics"]["label_agreement"] == 1.0
