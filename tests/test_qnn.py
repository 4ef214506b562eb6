"""The QNN HTP provider on tiny graphs: its LayerNormalization rule, node placement from a
real session on the onnxruntime-qnn simulator, sessions with CPU fallback disabled, and a
missing provider as an error. Tests that need a session skip without the ``qnn`` extra
(CI installs it)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.errors import ProviderError
from edgeopt.providers import SessionConfig, get_provider, open_session
from edgeopt.providers.qnn import HTP_CONFIG, qdq_rules
from edgeopt.quant.registry import QuantContext, quantize
from edgeopt.quant.static import _prepared, plan_qdq

needs_qnn = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_qnn") is None,
                               reason="needs onnxruntime-qnn (pip install 'edgeopt[qnn]'; CI has it)")
HIDDEN = 64
SHAPE = [1, 16, HIDDEN]
# A static config for graphs whose input shape is already fixed (no tokenizer inputs).
CONFIG = dataclasses.replace(HTP_CONFIG, fixed_batch=None, fixed_sequence=None)


def _save(nodes, inits, path: Path, inputs=None, out_shape=None) -> Path:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or SHAPE)
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [out], inits),
                              opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def _layernorm_graph(path: Path) -> Path:
    #   x -> MatMul(W) -> LayerNormalization(gamma, beta) -> y
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, HIDDEN).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.uniform(-0.1, 0.1, HIDDEN).astype(np.float32), "beta")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["y"], name="ln",
                              axis=-1, epsilon=1e-12)]
    return _save(nodes, inits, path)


def _calibration(n: int = 4) -> tuple[dict[str, np.ndarray], ...]:
    rng = np.random.default_rng(1)
    return tuple({"x": rng.normal(size=SHAPE).astype(np.float32)} for _ in range(n))


def _qdq(tmp_path: Path, rules) -> Path:
    """The LayerNorm graph quantized A16W8 the way qnn-int8 quantizes, with ``rules`` as the
    provider's plan rules (None: onnxruntime's defaults, which give gamma signed 8 bits)."""
    src = OnnxArtifact(_layernorm_graph(tmp_path / "float.onnx"))
    work = tmp_path / ("qnn" if rules else "plain")
    work.mkdir()
    out = quantize(src, CONFIG, work, PassRecord("quantize", {}),
                   QuantContext(calibration=_calibration(), plan_rules=rules))
    return out.path


def test_layernorm_gamma_never_gets_signed_8_bits(tmp_path):
    # HTP's LayerNorm has no signed-8-bit gamma: 16-bit inputs get symmetric s16, 8-bit u8.
    model, _ = _prepared(onnx.load(str(_layernorm_graph(tmp_path / "ln.onnx"))))
    for act, expected in (("uint16", ("int16", True)), ("uint8", ("uint8", False))):
        config = dataclasses.replace(CONFIG, activation_type=act)
        plan = qdq_rules(model, config, plan_qdq(model, config))
        gamma = plan.overrides["gamma"]
        assert (gamma.quant_type, gamma.symmetric) == expected, act
        assert "w" not in plan.overrides  # per-channel MatMul weights keep the default type


@needs_qnn
def test_qnn_takes_the_quantized_layernorm_graph_whole(tmp_path):
    graph = _qdq(tmp_path, qdq_rules)
    placement = get_provider("qnn").place(graph, SessionConfig(threads=1))
    nodes = len(onnx.load(str(graph)).graph.node)
    assert placement.error is None
    # Graph-input Q and output DQ included: nothing is left to the CPU, by design or not.
    assert (placement.taken, placement.nodes, placement.by_design) == (nodes, nodes, 0)
    assert placement.partitions == (nodes,) and placement.grade == "ok"
    # With CPU fallback off the session loads, runs on HTP and matches the CPU provider's
    # run of the same QDQ graph.
    session = open_session(graph, "qnn", threads=1, allow_fallback=False)
    cpu = open_session(graph, "cpu", threads=1)
    feed = {"x": np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)}
    got, want = session.run(None, feed)[0], cpu.run(None, feed)[0]
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()


@needs_qnn
def test_signed_8_bit_gamma_keeps_layernorm_off_htp(tmp_path):
    # What the shipped qnn-int8 did before the rule: gamma s8 per tensor, and HTP refuses
    # the LayerNorm node unit (its Q/DQ go with it).
    graph = _qdq(tmp_path, None)
    placement = get_provider("qnn").place(graph, SessionConfig(threads=1))
    left = {u.op_type: u for u in placement.unsupported}
    assert "LayerNormalization" in left and left["LayerNormalization"].nodes == 1
    assert left["LayerNormalization"].reason == "Failed to add node"
    with pytest.raises(ProviderError, match="CPU fallback is off"):
        open_session(graph, "qnn", threads=1, allow_fallback=False)


def _hardmax_graph(path: Path) -> Path:
    #   x -> Relu -> Hardmax -> Relu -> y      (HTP has no Hardmax kernel)
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu1"),
             helper.make_node("Hardmax", ["a"], ["b"], name="hardmax"),
             helper.make_node("Relu", ["b"], ["y"], name="relu2")]
    return _save(nodes, [], path, inputs=x, out_shape=[4, 8])


@needs_qnn
def test_placement_accounting_around_an_op_qnn_lacks(tmp_path):
    placement = get_provider("qnn").place(_hardmax_graph(tmp_path / "h.onnx"), SessionConfig(threads=1))
    assert placement.nodes == 3 and placement.taken == 2
    # The two Relus cannot join across the CPU node: two partitions of one node each.
    assert placement.partitions == (1, 1)
    (hardmax,) = placement.unsupported
    assert (hardmax.op_type, hardmax.nodes, hardmax.cause) == ("Hardmax", 1, "op")
    assert "not supported by QNN EP" in hardmax.reason
    assert placement.taken + sum(u.nodes for u in placement.unsupported) == placement.nodes
    assert placement.grade == "not recommended"


def test_a_missing_qnn_provider_is_an_error_not_a_cpu_session(tmp_path, monkeypatch):
    # onnxruntime alone would run the graph on the CPU; open_session refuses instead.
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import fails as if absent
    graph = _hardmax_graph(tmp_path / "h.onnx")
    with pytest.raises(ProviderError, match="onnxruntime-qnn is not installed"):
        open_session(graph, "qnn")
    placement = get_provider("qnn").place(graph, SessionConfig())
    assert placement.method == "not checkable" and "edgeopt[qnn]" in placement.detail
