"""Model folders: safety checks, corrupt weights, task detection. No torch needed."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeopt.errors import ModelError
from edgeopt.source import detect_task, inspect_model


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_detects_classifier_and_labels(tiny_classifier):
    src = inspect_model(str(tiny_classifier))
    assert src.task == "text-classification"
    assert src.label_names == ("negative", "positive")
    assert len(src.weights_sha256()) == 64


def test_detects_sentence_transformers_pooling(tiny_embedder):
    src = inspect_model(str(tiny_embedder))
    assert (src.task, src.pooling, src.normalize) == ("feature-extraction", "mean", True)


def test_task_override(tiny_classifier):
    assert inspect_model(str(tiny_classifier), task="feature-extraction").task == "feature-extraction"
    with pytest.raises(ModelError, match="unknown task"):
        inspect_model(str(tiny_classifier), task="speech")


def test_detect_task_from_architecture():
    assert detect_task("LlamaForCausalLM", "llama", "transformers") == "text-generation"
    assert detect_task("GPT2LMHeadModel", "gpt2", "transformers") == "text-generation"
    with pytest.raises(ModelError, match="pass --task"):
        detect_task("WhisperForConditionalGeneration", "whisper", "transformers")


def test_missing_path_and_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        inspect_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        inspect_model(str(tmp_path))


def test_pickle_weights_refused_unless_allowed(tiny_classifier, tmp_path):
    folder = _copy(tiny_classifier, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="--allow-pickle"):
        inspect_model(str(folder))
    assert inspect_model(str(folder), allow_pickle=True).uses_pickle


def test_remote_code_refused_unless_trusted(tiny_classifier, tmp_path):
    folder = _copy(tiny_classifier, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        inspect_model(str(folder))


def test_truncated_weights_are_corrupt(tiny_classifier, tmp_path):
    folder = _copy(tiny_classifier, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match="corrupt"):
        inspect_model(str(folder))
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        inspect_model(str(folder))


def test_unsupported_architecture(tiny_classifier, tmp_path):
    folder = _copy(tiny_classifier, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="whisper", architectures=["WhisperForSequenceClassification"])
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="not supported"):
        inspect_model(str(folder))


def test_unknown_demo_name_lists_demo_models():
    with pytest.raises(ModelError, match="minilm"):
        inspect_model("not-a-model-anywhere")
