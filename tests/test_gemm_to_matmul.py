"""Gemm -> MatMul + Add rewrite on tiny graphs built in code."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeopt.quant.gemm_to_matmul import gemm_to_matmul


def _graph(trans_b: int, alpha: float = 1.0, shared: bool = False):
    #   X[2,4] --Gemm(W, b, transB)--> Y[2,3]   (optionally W also feeds a second Gemm)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4) if trans_b else (4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["X", "W", "b"], ["Y"], name="g", transB=trans_b, alpha=alpha)]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])]
    if shared:
        nodes.append(helper.make_node("Gemm", ["X", "W"], ["Z"], name="g2", transB=trans_b))
        outputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, [2, 3]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])],
                              outputs, [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString())
    return sess.run(None, {"X": x})


def test_rewrite_keeps_outputs_for_both_layouts():
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    for trans_b in (0, 1):
        model = _graph(trans_b)
        before = _run(model, x)
        assert gemm_to_matmul(model) == 1
        assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
        np.testing.assert_allclose(_run(model, x)[0], before[0], rtol=1e-6, atol=1e-6)


def test_shared_weight_gets_a_transposed_copy():
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    model = _graph(1, shared=True)
    before = _run(model, x)
    assert gemm_to_matmul(model) == 2
    names = {t.name for t in model.graph.initializer}
    assert "W_T" in names and "W" not in names  # the untransposed copy has no users left
    for got, want in zip(_run(model, x), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_scaled_gemm_is_left_alone():
    model = _graph(1, alpha=0.5)
    assert gemm_to_matmul(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Gemm"]
