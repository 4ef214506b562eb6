"""--ort-format: model.ort and the reduced-build operator config in the bundle, the .ort
giving model.onnx's outputs, both listed in the manifest with their hashes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import edgeopt
from edgeopt.artifact import sha256_file
from edgeopt.bundle import read_manifest
from edgeopt.errors import RecipeError
from edgeopt.graph import op_counts
from edgeopt.recipe_yaml import recipe_from_dict


def test_ort_model_loads_and_matches_the_onnx(tiny_ort_bundle):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_ort_bundle)
    enc = tok(["the movie was great", "boring plot and bad acting ever", "i love this film"],
              padding=True, return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    outs = [ort.InferenceSession(str(tiny_ort_bundle / name)).run(None, feeds)[0]
            for name in ("model.onnx", "model.ort")]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
    assert outs[0].shape == (3, 2)


def test_manifest_lists_both_with_hashes_and_the_runtime_version(tiny_ort_bundle):
    manifest = read_manifest(tiny_ort_bundle)  # checks every listed sha256
    files = manifest["files"]
    for name in ("model.onnx", "model.ort", "required_operators_and_types.config"):
        assert files[name]["sha256"] == sha256_file(tiny_ort_bundle / name)
    entry = manifest["ort_format"]
    assert entry["model"] == "model.ort" and entry["onnxruntime_version"] == ort.__version__
    assert entry["max_abs_diff_vs_onnx"] <= 1e-3


def test_operator_config_names_the_graphs_ops(tiny_ort_bundle):
    config = (tiny_ort_bundle / "required_operators_and_types.config").read_text()
    assert str(tiny_ort_bundle.parent) not in config  # no build paths shipped
    listed = {op.split("{")[0] for line in config.splitlines() if not line.startswith("#")
              for op in line.split(";")[2].split(",")}
    # every op type of model.onnx that survives the conversion's own fusions is listed
    assert {"Attention", "SkipLayerNormalization", "MatMul"} <= listed
    assert {"Attention", "SkipLayerNormalization"} <= set(op_counts(tiny_ort_bundle / "model.onnx"))


def test_recipe_setting_and_decoders(tiny_llama_lm, tmp_path):
    base = {"name": "t", "description": "d"}
    assert recipe_from_dict(base | {"ort_format": True}).ort_format is True
    with pytest.raises(RecipeError, match="ort_format must be true or false"):
        recipe_from_dict(base | {"ort_format": "yes"})
    with pytest.raises(RecipeError, match="ort_format"):  # refused before any heavy work
        edgeopt.compile(str(tiny_llama_lm), target="arm64-int4", out=tmp_path / "lm",
                        ort_format=True)
