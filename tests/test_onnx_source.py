"""An .onnx file (or a folder holding one and its tokenizer) as the source: export is
skipped, the float graph is the parity reference, the rest runs unchanged, and the
source is never written to."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import onnx
import pytest
from click.testing import CliRunner
from helpers import fast_recipe
from onnx import TensorProto, helper

import edgeopt
from edgeopt.cli import cli
from edgeopt.graph import op_counts
from edgeopt.recipe import OptimizeConfig


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def onnx_folder(tiny_classifier, tmp_path_factory):
    """A plain fp32 export of the tiny classifier beside its tokenizer and config, the way a
    team that exported it already would ship it (no safetensors)."""
    bundle = tmp_path_factory.mktemp("fp32") / "b"
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), optimize=OptimizeConfig(fusions=False))
    edgeopt.compile(tiny_classifier, recipe=recipe, out=bundle)
    folder = tmp_path_factory.mktemp("exported")
    shutil.copy(bundle / "model.onnx", folder / "classifier.onnx")
    for name in ("tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "tokenizer.json"):
        if (bundle / name).exists():
            shutil.copy(bundle / name, folder / name)
    shutil.copy(tiny_classifier / "config.json", folder / "config.json")
    return folder


def test_an_onnx_folder_compiles_to_int8_against_its_own_graph(onnx_folder, tmp_path):
    before = _digest(onnx_folder)
    report = edgeopt.compile(onnx_folder, recipe=fast_recipe("x86-int8"), out=tmp_path / "b")
    assert report.passed and report.task == "text-classification"
    names = [p["name"] for p in report.passes]
    assert "export" not in names and names[:2] == ["load", "optimize"]
    assert report.parity["reference"].startswith("the input ONNX graph classifier.onnx")
    assert report.parity["metrics"]["label_agreement"] >= 0.95
    assert op_counts(tmp_path / "b" / "model.onnx").get("MatMulInteger", 0) + \
        op_counts(tmp_path / "b" / "model.onnx").get("DynamicQuantizeMatMul", 0) > 0
    assert report.sizes["onnx fp32"] == (onnx_folder / "classifier.onnx").stat().st_size
    assert report.source["library"] == "onnx"
    assert _digest(onnx_folder) == before  # the source is only read


def test_a_bare_onnx_file_is_its_own_fp32_reference(onnx_folder, tmp_path):
    report = edgeopt.compile(onnx_folder / "classifier.onnx", recipe=fast_recipe("x86-fp32"),
                             out=tmp_path / "b")
    assert report.passed and report.parity["metrics"]["max_abs_error"] < 1e-4
    manifest = (tmp_path / "b" / "manifest.json").read_text()
    assert '"label_names": [\n    "negative",\n    "positive"\n  ]' in manifest


def _cli(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_onnx_sources_edgeopt_cannot_compile_are_refused(onnx_folder, tmp_path):
    no_tok = tmp_path / "no-tokenizer"
    no_tok.mkdir()
    shutil.copy(onnx_folder / "classifier.onnx", no_tok / "m.onnx")
    result = _cli("compile", no_tok / "m.onnx", "-t", "x86-int8", "-o", tmp_path / "o1")
    assert result.exit_code == 2 and "needs its tokenizer" in result.output
    assert len(result.output.strip().splitlines()) == 1

    # A decoder graph (a KV cache input) is refused: decoders compile from their folder.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["past_key_values.0.key"], ["logits"])], "dec",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1]),
         helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
    dec = tmp_path / "dec"
    dec.mkdir()
    onnx.save(helper.make_model(graph), str(dec / "lm.onnx"))
    result = _cli("compile", dec / "lm.onnx", "-t", "x86-int8", "-o", tmp_path / "o2")
    assert result.exit_code == 2 and "takes a KV cache" in result.output

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(onnx_folder / "classifier.onnx", two / name)
    result = _cli("compile", two, "-t", "x86-int8", "-o", tmp_path / "o3")
    assert result.exit_code == 2 and "holds 2 .onnx files" in result.output
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))
