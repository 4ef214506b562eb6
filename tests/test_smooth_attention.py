"""Smoothing the packed Attention inputs (quant/smooth_attention) moves LayerNorm channel
scales into the Q/K/V weights without changing what the float graph computes."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import fast_recipe

import edgeopt
from edgeopt.quant.outlier_split import activation_absmax
from edgeopt.quant.smooth_attention import attention_inputs, smooth_attention
from edgeopt.runtime import make_session


def test_smoothing_keeps_the_float_outputs(tiny_classifier, tmp_path):
    edgeopt.compile(tiny_classifier, recipe=fast_recipe("x86-fp32"), out=tmp_path / "b")
    path = tmp_path / "b" / "model.onnx"
    model = onnx.load(str(path))
    tensors = attention_inputs(model)
    assert len(tensors) == 2  # one fused Attention per layer, each after a LayerNorm
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(5, 39, size=(3, 12)), "attention_mask": np.ones((3, 12), np.int64),
            "token_type_ids": np.zeros((3, 12), np.int64)}
    peaks = activation_absmax(path, tensors, [feed])
    # Make one channel loud, as in real BERTs, so the factors are far from 1.
    peaks = {t: p * np.where(np.arange(p.size) == 3, 50.0, 1.0) for t, p in peaks.items()}
    assert smooth_attention(model, peaks, alpha=0.5) == 2
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    before = make_session(path).run(None, feed)[0]
    after = make_session(smoothed).run(None, feed)[0]
    assert np.abs(before - after).max() < 1e-4
    weights_changed = {t.name for t in model.graph.initializer if t.name.endswith("_smooth_factor")}
    assert len(weights_changed) == 2


def test_separate_qkv_leaves_nothing_to_smooth_and_still_compiles(tiny_classifier, tmp_path):
    # arm64-int8 smooths packed Attention inputs; with Q/K/V as separate MatMuls there are
    # none, and an empty probe list once made onnxruntime return every output instead.
    import dataclasses

    recipe = fast_recipe("arm64-int8")
    recipe = dataclasses.replace(recipe, optimize=dataclasses.replace(recipe.optimize, separate_qkv=True))
    report = edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b")
    notes = next(p for p in report.passes if p["name"] == "quantize")["notes"]
    assert notes["smoothed_attention_inputs"] == 0
    assert notes["quantized_ops"].get("MatMulInteger", 0) + notes["quantized_ops"].get(
        "DynamicQuantizeMatMul", 0) >= 6  # Q, K, V, output, two FFN per layer: all integer
    assert activation_absmax(tmp_path / "b" / "model.onnx", [], []) == {}
