"""The compile's accelerator preflight: which provider a target is checked on, the recipe
setting that makes it a gate, the report section, and the one-line failure naming the
op and why; on NNAPI's checker (always here), QNN's simulator (with the ``qnn`` extra)
and providers that cannot be checked here."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from helpers import REPO, fast_recipe
from onnx import TensorProto, helper, numpy_helper

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.compiler.preflight import Preflight, accelerator, preflight, wanted
from edgeopt.errors import PreflightError, RecipeError
from edgeopt.recipe import PreflightConfig, Recipe
from edgeopt.recipe_yaml import load_recipe_file, recipe_from_dict

needs_qnn = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_qnn") is None,
                               reason="needs onnxruntime-qnn (pip install 'edgeopt[qnn]'; CI has it)")
SHAPE = [1, 8, 16]


def load_target(name: str) -> Recipe:
    """A shipped target as this checkout has it (an editable install may map another's)."""
    return load_recipe_file(REPO / "recipes" / "targets" / f"{name}.yaml")


def _graph(path: Path, op: str) -> Path:
    #   x -> Add(c) -> <op> -> y        fixed shape, float: what NNAPI's checker judges
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=SHAPE).astype(np.float32), "c")]
    second = helper.make_node("Relu", ["h"], ["y"], name="relu")
    if op == "LayerNormalization":
        inits.append(numpy_helper.from_array(np.ones(SHAPE[-1], np.float32), "gamma"))
        second = helper.make_node(op, ["h", "gamma"], ["y"], name="ln", axis=-1)
    nodes = [helper.make_node("Add", ["x", "c"], ["h"], name="add"), second]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _recipe(providers: tuple[str, ...], required: bool) -> Recipe:
    return Recipe(name="t", description="test", providers=providers,
                  preflight=PreflightConfig(require_one_graph=required))


def _run(graph: Path, recipe: Recipe) -> SimpleNamespace:
    """The stage as the driver runs it; returns the context it filled."""
    ctx = SimpleNamespace(request=SimpleNamespace(recipe=recipe, target="t"), sections=[],
                          record=PassRecord("preflight", {}))
    out = preflight(OnnxArtifact(graph), recipe.preflight, graph.parent, ctx)
    assert out.path == graph  # it measures; it never changes the graph
    return ctx


def test_each_target_is_checked_on_its_own_accelerator():
    names = {t: getattr(accelerator(load_target(t)), "name", None)
             for t in ("qnn-int8", "android-int8", "arm64-int8", "x86-int8", "x86-fp32")}
    assert names == {"qnn-int8": "qnn", "android-int8": "nnapi", "arm64-int8": None,
                     "x86-int8": None, "x86-fp32": None}
    # CPU-only targets skip the stage: no session, no checker.
    ctx = SimpleNamespace(request=SimpleNamespace(recipe=load_target("x86-int8")))
    assert not wanted(ctx)


def test_the_gate_is_a_recipe_setting():
    assert load_target("qnn-int8").preflight.require_one_graph
    assert not Recipe(name="t", description="d").preflight.require_one_graph
    base = {"name": "t", "description": "d"}
    assert recipe_from_dict(base | {"preflight": {"require_one_graph": True}}).preflight == \
        PreflightConfig(True)
    with pytest.raises(RecipeError, match="unknown key.*preflight: strict"):
        recipe_from_dict(base | {"preflight": {"strict": True}})
    with pytest.raises(RecipeError, match="preflight.require_one_graph must be true or false"):
        recipe_from_dict(base | {"preflight": {"require_one_graph": "yes"}})


def test_an_op_nnapi_lacks_fails_the_required_preflight_naming_it(tmp_path):
    graph = _graph(tmp_path / "ln.onnx", "LayerNormalization")
    with pytest.raises(PreflightError, match=r"NNAPI takes 1 of 2 nodes.*LayerNormalization x1: "
                                             r"not in nnapi_supported_ops.md") as err:
        _run(graph, _recipe(("NNAPIExecutionProvider", "CPUExecutionProvider"), True))
    assert "\n" not in str(err.value) and err.value.exit_code == 1


def test_a_preflight_that_is_not_required_only_reports(tmp_path):
    graph = _graph(tmp_path / "ln.onnx", "LayerNormalization")
    ctx = _run(graph, _recipe(("NNAPIExecutionProvider",), False))
    (section,) = ctx.sections
    assert isinstance(section, Preflight) and section.status == "not one graph" and not section.failed
    data = section.to_dict()
    assert data["placement"]["unsupported"][0]["op_type"] == "LayerNormalization"
    assert "LayerNormalization" in section.to_markdown()
    assert ctx.record.notes["taken"] == "1/2"


def test_a_graph_nnapi_takes_whole_passes(tmp_path):
    ctx = _run(_graph(tmp_path / "relu.onnx", "Relu"), _recipe(("NNAPIExecutionProvider",), True))
    (section,) = ctx.sections
    assert section.status == "one graph" and section.placement.partitions == (2,)


def test_a_provider_not_installed_here_is_not_checked_and_never_fails(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # as without the qnn extra
    graph = _graph(tmp_path / "ln.onnx", "LayerNormalization")
    for providers in (("QNNExecutionProvider",), ("XNNPACKExecutionProvider",)):
        ctx = _run(graph, _recipe(providers, True))
        (section,) = ctx.sections
        assert section.status.startswith("not checked: ") and not section.failed
    assert "onnxruntime-qnn is not installed" in _run(
        graph, _recipe(("QNNExecutionProvider",), True)).sections[0].status


@needs_qnn
def test_a_tiny_bert_compiled_for_qnn_runs_on_htp_as_one_graph(tiny_classifier, tmp_path):
    import edgeopt

    recipe = fast_recipe("qnn-int8")
    # The tiny BERT has 64 positions: the fixed sequence is shortened for it.
    recipe = dataclasses.replace(recipe, quantize=dataclasses.replace(recipe.quantize,
                                                                      fixed_sequence=32))
    report = edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b",
                             fail_on_parity=False)
    section = report.section("preflight")
    assert section is not None and section.required and section.status == "one graph"
    p = section.placement
    assert p.method == "session" and p.taken == p.nodes > 100 and len(p.partitions) == 1
    assert report.to_dict()["sections"]["preflight"]["status"] == "one graph"
    assert "preflight" in [r["name"] for r in report.passes]
    # The app opens the bundle with the options the placement was measured with.
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["provider_options"] == {"QNNExecutionProvider": {
        "soc_model": "57", "offload_graph_io_quantization": "0"}}


@needs_qnn
def test_qnn_preflight_fails_the_compile_when_htp_refuses_an_op(tmp_path):
    graph = tmp_path / "h.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Hardmax", ["a"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 21)])
    onnx.save(model, str(graph))
    with pytest.raises(PreflightError, match="QNN HTP takes 1 of 2 nodes.*Hardmax x1: Operators "
                                             "of type `Hardmax` are not supported by QNN EP"):
        _run(graph, _recipe(("QNNExecutionProvider", "CPUExecutionProvider"), True))
