"""Recipes and targets: parsing, validation and the shipped target files."""

from __future__ import annotations

import re

import pytest

from edgeopt.errors import RecipeError
from edgeopt.recipe import DynamicInt8Config, NoQuantConfig, WeightOnlyInt4Config
from edgeopt.recipe_yaml import load_recipe_file, recipe_from_dict
from edgeopt.targets import describe_targets, load_target, target_names


def test_required_targets_ship():
    assert {"x86-fp32", "x86-int8", "arm64-int8", "arm64-int4"} <= set(target_names())


@pytest.mark.parametrize("name", target_names())
def test_every_target_loads_and_names_itself(name):
    recipe = load_target(name)
    assert recipe.name == name
    assert recipe.description
    assert recipe.to_dict()["quantize"]["method"] == recipe.quantize.method


def test_target_quantize_choices_carry_a_reason():
    # Every setting in a shipped target's quantize section has a comment saying why.
    from edgeopt.targets import _targets_dir

    for path in _targets_dir().glob("*.yaml"):
        section = path.read_text().split("\nquantize:", 1)[1].split("\ngates:", 1)[0]
        for line in section.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                assert "#" in line, f"{path.name}: '{line.strip()}' has no reason"


def test_describe_targets_is_one_line_each():
    rows = describe_targets()
    assert all("\n" not in d and d for _, d in rows)


def test_quant_method_selects_config_type():
    base = {"name": "r", "description": "d"}
    assert isinstance(recipe_from_dict(base).quantize, NoQuantConfig)
    r = recipe_from_dict(base | {"quantize": {"method": "dynamic-int8", "per_channel": False}})
    assert isinstance(r.quantize, DynamicInt8Config) and r.quantize.per_channel is False
    r = recipe_from_dict(base | {"quantize": {"method": "weight-only-int4", "block_size": 32}})
    assert isinstance(r.quantize, WeightOnlyInt4Config) and r.quantize.block_size == 32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"description": "d"}, "'name'"),
        ({"name": "r", "description": "d", "bogus": 1}, "unknown top-level key"),
        ({"name": "r", "description": "d", "quantize": {"method": "magic"}}, "unknown quantize.method"),
        ({"name": "r", "description": "d", "quantize": {"method": "dynamic-int8", "colour": 1}},
         "unknown key(s) in quantize: colour"),
        ({"name": "r", "description": "d", "export": {"opset": 9}}, "export.opset"),
        ({"name": "r", "description": "d", "export": {"kv_cache": "paged"}},
         "export.kv_cache must be one of in-place, concat, got 'paged'"),
        ({"name": "r", "description": "d", "bench": {"threads": "two"}}, "bench.threads"),
        ({"name": "r", "description": "d", "gates": {"text-classification":
                                                    {"min_label_agreement": 1.5}}}, "within"),
        ({"name": "r", "description": "d", "gates": {"speech": {}}}, "unknown task"),
        ({"name": "r", "description": "d", "version": 7}, "version 7"),
        ({"name": "r", "description": "d", "quantize": {"method": "weight-only-int4",
                                                       "block_size": 100}}, "block_size"),
        ({"name": "r", "description": "d", "quantize": {"method": "weight-only-int4",
                                                       "int8_block_size": 256}}, "int8_block_size"),
        ({"name": "r", "description": "d", "quantize": {"method": "weight-only-int4",
                                                       "smooth_alpha": 1.0}}, "must be in [0, 1)"),
        ({"name": "r", "description": "d", "quantize": {"method": "weight-only-int4",
                                                       "smooth_groups": True}}, "needs smooth_alpha > 0"),
    ],
)
def test_bad_recipes_raise_one_clear_error(data, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        recipe_from_dict(data)


def test_gates_are_per_task_and_overridable():
    r = load_target("arm64-int8")
    assert r.gates.for_task("text-classification").min_label_agreement == 0.99
    assert r.gates.for_task("feature-extraction").min_label_agreement is None
    r2 = r.with_gates("text-classification", min_label_agreement=0.5)
    assert r2.gates.for_task("text-classification").min_label_agreement == 0.5
    assert r.gates.for_task("text-classification").min_label_agreement == 0.99  # frozen copy


def test_unknown_target_lists_valid_ones():
    with pytest.raises(RecipeError, match="valid targets: .*arm64-int8"):
        load_target("arm65-int8")


def test_recipe_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe_file(bad)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe_file(missing)
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: mine\ndescription: my own\nquantize: {method: dynamic-int8}\n")
    assert load_recipe_file(ok).name == "mine"


def test_extends_merges_a_recipe_over_a_shipped_target(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: d\nextends: arm64-int8\n"
                    "quantize:\n  outlier_max_channels: 4\nbench:\n  repeats: 7\n")
    recipe, base = load_recipe_file(path), load_target("arm64-int8")
    assert recipe.name == "mine" and recipe.gates == base.gates and recipe.optimize == base.optimize
    assert recipe.quantize.outlier_max_channels == 4 and recipe.bench.repeats == 7
    # Every other key of the merged sections is the target's.
    assert recipe.quantize.smooth_attention_alpha == base.quantize.smooth_attention_alpha
    assert recipe.bench.warmup == base.bench.warmup


def test_extends_with_another_method_replaces_the_section(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: d\nextends: arm64-int8\n"
                    "quantize:\n  method: weight-only-int4\n  block_size: 32\n")
    recipe = load_recipe_file(path)
    assert isinstance(recipe.quantize, WeightOnlyInt4Config) and recipe.quantize.block_size == 32


def test_extends_an_unknown_target_names_the_valid_ones(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndescription: d\nextends: arm65-int8\n")
    with pytest.raises(RecipeError, match="not a shipped target; valid targets: .*arm64-int8"):
        load_recipe_file(path)


@pytest.mark.parametrize("name", ["minilm-sst2-mobile", "minilm-embed-mobile"])
def test_shipped_front_half_recipes_are_arm64_int8_after_their_prepare_stages(name):
    from pathlib import Path

    recipe = load_recipe_file(Path(__file__).parents[1] / "recipes" / f"{name}.yaml")
    base = load_target("arm64-int8")
    assert [s.stage for s in recipe.prepare] == ["distill", "prune", "trim-vocab", "recover"]
    assert recipe.prepare[-1].teacher == "distilled"
    assert (recipe.quantize, recipe.gates, recipe.export) == (base.quantize, base.gates, base.export)
