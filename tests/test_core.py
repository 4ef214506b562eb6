"""The compile core: a recipe's stage list runs in order with a record per stage, the
prepare section's torch-side stages change the model that is exported, families are
picked by task, and a rebuild is byte-identical."""

from __future__ import annotations

import dataclasses
import json

import onnx
import pytest
from helpers import fast_recipe

import edgeopt
from edgeopt.api import family_for
from edgeopt.decoder.validate import DecoderEvalConfig
from edgeopt.errors import RecipeError
from edgeopt.families import TASKS
from edgeopt.recipe import BenchConfig
from edgeopt.recipe_prepare import KeepLayersConfig
from edgeopt.recipe_yaml import recipe_from_dict


def _layers_in(path) -> int:
    """Distinct encoder layers whose nodes the graph still has (names carry `layer.N`)."""
    names = [n.name for n in onnx.load(str(path)).graph.node]
    return len({part.split(".")[1].split("/")[0] for name in names for part in name.split("/")
                if part.startswith("layer.")})


def test_prepare_stages_run_in_order_and_leave_records(tiny_classifier, tmp_path):
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), prepare=(
        KeepLayersConfig(layers=(0, 1)), KeepLayersConfig(layers=(1,))))
    report = edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b")
    names = [p["name"] for p in report.passes]
    assert names == ["load", "prepare:keep-layers", "prepare:keep-layers", "export", "optimize",
                     "quantize", "validate", "benchmark"]
    first, second = report.passes[1], report.passes[2]
    assert first["notes"]["layers"] == "2 -> 2" and second["notes"]["layers"] == "2 -> 1"
    assert second["config"]["stage"] == "keep-layers" and tuple(second["config"]["layers"]) == (1,)
    # Each torch-side record hashes what went in and out: the second stage changed it.
    assert first["input_sha256"] == first["output_sha256"] != second["output_sha256"]
    assert second["output_bytes"] < second["input_bytes"]
    # Parity is judged against the prepared model, so the fp32 bundle still matches it.
    assert report.passed and report.parity["metrics"]["max_abs_error"] < 1e-4
    assert _layers_in(tmp_path / "b" / "model.onnx") == 1
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert saved["recipe"]["prepare"][1] == {"stage": "keep-layers", "layers": [1]}


def test_keep_layers_on_a_decoder_keeps_cache_parity(tiny_llama_lm, tmp_path):
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), prepare=(KeepLayersConfig(layers=(1,)),),
                                 bench=BenchConfig(seq_len=16, decode_tokens=4, warmup=1, repeats=3,
                                                   torch_baseline=False))
    small = DecoderEvalConfig(max_tokens=256, window=128, prompts=2, new_tokens=6)
    report = edgeopt.compile(tiny_llama_lm, recipe=recipe, out=tmp_path / "lm", decoder_eval=small)
    assert [p["name"] for p in report.passes][:3] == ["load", "prepare:keep-layers", "export"]
    export = report.passes[2]["notes"]
    assert export["layers"] == 1
    # The kept layer's KV cache slot is renumbered, so greedy decoding still matches.
    assert report.parity["metrics"]["token_agreement"] == 1.0 and report.passed


def test_prepare_section_from_yaml_is_checked():
    base = {"name": "r", "description": "d"}
    recipe = recipe_from_dict({**base, "prepare": [{"stage": "keep-layers", "layers": [0, 2]}]})
    assert recipe.prepare == (KeepLayersConfig(layers=(0, 2)),)
    with pytest.raises(RecipeError, match="unknown prepare\\[0\\].stage 'distil'"):
        recipe_from_dict({**base, "prepare": [{"stage": "distil"}]})
    with pytest.raises(RecipeError, match="increasing order"):
        recipe_from_dict({**base, "prepare": [{"stage": "keep-layers", "layers": [2, 0]}]})
    with pytest.raises(RecipeError, match="unknown key"):
        recipe_from_dict({**base, "prepare": [{"stage": "keep-layers", "layers": [0], "x": 1}]})


def test_keep_layers_refuses_a_layer_the_model_lacks(tiny_classifier, tmp_path):
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), prepare=(KeepLayersConfig(layers=(5,)),))
    with pytest.raises(RecipeError, match="layer 5 does not exist; the model has 2 layers"):
        edgeopt.compile(tiny_classifier, recipe=recipe, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_every_task_has_one_family():
    for task in TASKS:
        assert task in family_for(task).tasks
    assert family_for("text-generation").name == "decoder"
    assert family_for("text-classification").name == "encoder"


@pytest.mark.parametrize("target", ["x86-int8", "android-int8"])
def test_two_compiles_are_byte_identical(tiny_classifier, tmp_path, target):
    manifests = []
    for name in ("a", "b"):
        edgeopt.compile(tiny_classifier, recipe=fast_recipe(target), out=tmp_path / name)
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text()))
    model_a = (tmp_path / "a" / "model.onnx").read_bytes()
    assert model_a == (tmp_path / "b" / "model.onnx").read_bytes()
    # Every file hash in the manifest agrees but the reports', which hold timings.
    a, b = manifests[0].pop("files"), manifests[1].pop("files")
    assert {k for k in a if a[k] != b[k]} <= {"report.json", "report.md", "report.html"}
    assert set(a) == set(b) and a["model.onnx"] == b["model.onnx"]
    assert manifests[0] == manifests[1]
