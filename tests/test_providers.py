"""Provider registry, sessions that never fall back silently, placement accounting and
`edgeopt inspect`, on tiny graphs built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgeopt.cli import cli
from edgeopt.errors import ProviderError
from edgeopt.providers import PROVIDERS, SessionConfig, get_provider, open_session, parse_providers
from edgeopt.providers.placement import Placement, Unsupported, connected_groups, group_unsupported
from edgeopt.providers.session import check_got
from edgeopt.providers.sizes import weight_sizes


def _tiny(path: Path) -> Path:
    """x[1,4] -> MatMul(W 4x3, layer.0) -> Relu -> MatMul(W 3x2, layer.1) -> y."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "layer.0.w")
    w1 = numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "layer.1.w")
    nodes = [helper.make_node("MatMul", ["x", "layer.0.w"], ["h"], name="layer.0/MatMul"),
             helper.make_node("Relu", ["h"], ["r"], name="layer.0/Relu"),
             helper.make_node("MatMul", ["r", "layer.1.w"], ["y"], name="layer.1/MatMul")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              initializer=[w0, w1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_registry_names_resolve_both_ways_and_refuse_unknown():
    assert set(PROVIDERS) >= {"cpu", "cuda", "qnn", "nnapi", "coreml", "xnnpack"}
    assert get_provider("QNN") is get_provider("QNNExecutionProvider")
    assert [p.name for p in parse_providers("qnn, cpu,qnn")] == ["qnn", "cpu"]
    with pytest.raises(ProviderError, match="no execution provider named 'tpu'"):
        get_provider("tpu")
    with pytest.raises(ProviderError, match="names no provider"):
        parse_providers(" , ")


def test_cpu_session_runs_and_reports_its_provider(tmp_path):
    session = open_session(_tiny(tmp_path / "m.onnx"), "cpu", threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    out = session.run(None, {"x": np.ones((1, 4), np.float32)})[0]
    assert out.shape == (1, 2)


def test_missing_provider_is_an_error_not_a_cpu_session(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the missing-provider path cannot be shown")
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        open_session(_tiny(tmp_path / "m.onnx"), "cuda")


def test_a_silently_replaced_provider_is_caught():
    class CpuOnly:  # what onnxruntime hands back when it drops an EP with a warning
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(ProviderError, match="fell back without an error"):
        check_got(CpuOnly(), get_provider("cuda"))


def test_cpu_placement_counts_every_node_as_one_graph(tmp_path):
    cpu = get_provider("cpu")
    placement = cpu.place(_tiny(tmp_path / "m.onnx"), SessionConfig(threads=1))
    assert (placement.nodes, placement.taken, placement.grade) == (3, 3, "ok")
    assert placement.verdict.startswith("runs on the CPU EP")


def _placement(taken: int, partitions: tuple[int, ...], nodes: int = 100, **kw) -> Placement:
    return Placement("nnapi", "NnapiExecutionProvider", "NNAPI", "checker", "test", nodes=nodes,
                     taken=taken, partitions=partitions, **kw)


def test_placement_grades_follow_share_and_partitions():
    assert _placement(100, (100,)).grade == "ok"
    assert _placement(90, (60, 30),
                      unsupported=(Unsupported("LayerNormalization", 10, "no kernel"),)).grade == "fallbacks"
    many = _placement(90, (30, 30, 20, 10))
    assert many.grade == "not recommended" and "4 partitions" in many.verdict
    thin = _placement(13, (13,), unsupported=(Unsupported("com.microsoft:BiasGelu", 87, "no kernel"),))
    assert thin.grade == "not recommended" and "BiasGelu" in thin.verdict
    assert _placement(0, (), error="boom").grade == "fails"
    # Nodes left to the CPU by design do not count against the share.
    assert _placement(96, (96,), by_design=4).grade == "ok"


def test_unsupported_nodes_group_by_op_and_reason():
    grouped = group_unsupported([("Erf", "no kernel", "op"), ("Shape", "dynamic", "shape"),
                                 ("Erf", "no kernel", "op")])
    assert grouped[0] == Unsupported("Erf", 2, "no kernel", "op")
    assert grouped[1].op_type == "Shape" and grouped[1].nodes == 1


def test_connected_groups_split_where_a_foreign_node_sits_between(tmp_path):
    graph = onnx.load(str(_tiny(tmp_path / "m.onnx"))).graph
    # Without the Relu the two MatMuls share no tensor: two partitions.
    apart = connected_groups(graph, {"layer.0/MatMul", "layer.1/MatMul"})
    assert apart == [["layer.0/MatMul"], ["layer.1/MatMul"]]
    assert connected_groups(graph, {n.name for n in graph.node}) == [[n.name for n in graph.node]]


def test_weight_sizes_by_op_type_and_layer(tmp_path):
    sizes = weight_sizes(_tiny(tmp_path / "m.onnx"))
    assert sizes.total_bytes == (12 + 6) * 4
    assert dict(sizes.by_op_type) == {"MatMul": 72}
    assert dict(sizes.by_layer) == {"layer.0": 48, "layer.1": 24}


def test_inspect_cli_json_and_bad_provider(tmp_path):
    model = _tiny(tmp_path / "m.onnx")
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(model), "--ep", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    cpu = next(p for p in data["providers"] if p["provider"] == "cpu")
    assert cpu["taken"] == 3 and cpu["grade"] == "ok"
    bad = runner.invoke(cli, ["inspect", str(model), "--ep", "tpu"])
    assert bad.exit_code == 2
    assert "no execution provider named 'tpu'" in bad.output and "Traceback" not in bad.output
