"""Activation smoothing before MatMulNBits' int8 activations: measured on the kernel.

Graph (made here):  x --MatMul(U)--> up --Mul(gate)--> product --MatMul(D)--> y
The product has four channels 300x louder than the rest, the shape of a gated MLP's
outliers; MatMulNBits at accuracy level 4 rounds each block of the product to int8.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.quant.registry import QuantContext, quantize
from edgeopt.recipe import WeightOnlyInt4Config

K, N, M = 64, 256, 48


def _graph(path, rng):
    u = rng.standard_normal((K, N)).astype(np.float32) / 8
    u[:, [5, 77, 130, 200]] *= 300.0  # loud product channels
    d = rng.standard_normal((N, M)).astype(np.float32) / 16
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "U"], ["up"], name="up_proj/MatMul"),
         helper.make_node("Mul", ["gate", "up"], ["product"], name="mul"),
         helper.make_node("MatMul", ["product", "D"], ["y"], name="down_proj/MatMul")],
        "smooth",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K]),
         helper.make_tensor_value_info("gate", TensorProto.FLOAT, ["rows", N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", M])],
        [numpy_helper.from_array(u, "U"), numpy_helper.from_array(d, "D")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))


def _feed(rng, rows=256):
    return {"x": rng.standard_normal((rows, K)).astype(np.float32),
            "gate": rng.uniform(0.0, 1.0, (rows, N)).astype(np.float32)}


def _error(path, reference, feed):
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], feed)[0]
    return float(np.linalg.norm(got - reference) / np.linalg.norm(reference))


def test_smoothing_lowers_the_int8_activation_error_of_the_down_projection(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "float.onnx"
    _graph(source, rng)
    context = QuantContext(calibration=tuple(_feed(rng) for _ in range(4)))
    test = _feed(rng)
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(["y"], test)[0]
    errors = {}
    for alpha in (0.0, 0.5):
        work = tmp_path / f"alpha{alpha}"
        config = WeightOnlyInt4Config(bits=8, block_size=128, smooth_alpha=alpha)
        out = quantize(OnnxArtifact(source), config, work, PassRecord("quantize", {}), context)
        errors[alpha] = _error(out.path, reference, test)
    # Both weights are 8-bit; what differs is how the product's blocks round to int8.
    # Measured: 0.46x.
    assert errors[0.5] < 0.6 * errors[0.0], errors
