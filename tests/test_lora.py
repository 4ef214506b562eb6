"""LoRA adapters: a PEFT adapter trained in the test on the tiny classifier, merged and
compiled; and the one-line refusals (no base, pickle weights, task mismatch, no peft)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import fast_recipe

import edgeopt
from edgeopt.bundle import read_manifest
from edgeopt.cli import cli
from edgeopt.errors import ModelError
from edgeopt.source import inspect_model
from edgeopt.tasks import load_torch

pytest.importorskip("peft")

TRAIN = [("the movie is very good", 1), ("i love this film", 1), ("great acting and music", 1),
         ("the best story ever", 1), ("the film was terrible", 0), ("boring plot and slow", 0),
         ("i hate this movie", 0), ("the worst ending ever", 0)]
PROBE = ["it was not fun", "a great and funny story", "the music is sad and long",
         "this is the best film", "bad acting"]


def _logits(model, tokenizer, texts):
    import torch

    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**enc).logits.numpy()


@pytest.fixture(scope="module")
def adapter(tiny_classifier, tmp_path_factory):
    """(adapter folder, PeftModel logits on PROBE, base logits on PROBE): a SEQ_CLS LoRA
    (r 4 on query/value) trained a few steps, so its deltas and head are not zero."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_classifier)
    base = BertForSequenceClassification.from_pretrained(tiny_classifier).eval()
    base_logits = _logits(base, tok, PROBE)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                                            target_modules=["query", "value"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    enc = tok([t for t, _ in TRAIN], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in TRAIN])
    model.train()
    for _ in range(8):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    path = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(path)
    return path, _logits(model, tok, PROBE), base_logits


def _copy(src, dst, **config):
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        cfg.update(config)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_inspect_finds_the_base_it_names(adapter, tiny_classifier):
    src = inspect_model(str(adapter[0]))
    assert src.path == tiny_classifier and src.task == "text-classification"
    assert src.adapter.path == adapter[0] and src.adapter.r == 4
    assert sorted(src.adapter.target_modules) == ["query", "value"]
    assert src.adapter.tokenizer_path == tiny_classifier  # the adapter has none of its own
    assert src.weights_sha256() == inspect_model(str(tiny_classifier)).weights_sha256()


def test_merged_model_equals_the_peft_model(adapter):
    path, peft_logits, base_logits = adapter
    loaded = load_torch(inspect_model(str(path)))
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert not any("lora_" in k for k in loaded.model.state_dict())
    merged = _logits(loaded.model, loaded.tokenizer, PROBE)
    np.testing.assert_allclose(merged, peft_logits, atol=1e-5)
    assert np.abs(merged - base_logits).max() > 1e-2  # the adapter (and its head) came through


def test_compile_passes_parity_and_records_base_and_adapter(adapter, tiny_classifier, tmp_path):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    path, peft_logits, _ = adapter
    out = tmp_path / "bundle"
    report = edgeopt.compile(path, recipe=fast_recipe("x86-fp32"), out=out)
    assert report.passed and report.parity["metrics"]["max_abs_error"] < 1e-4
    src = report.source
    assert src["path"] == str(tiny_classifier)
    assert src["weights_sha256"] == inspect_model(str(tiny_classifier)).weights_sha256()
    weights = path / "adapter_model.safetensors"
    ad = src["adapter"]
    assert ad["path"] == str(path)
    assert ad["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (ad["r"], ad["lora_alpha"], sorted(ad["target_modules"])) == (4, 8, ["query", "value"])
    manifest = read_manifest(out)
    assert manifest["source_weights_sha256"] == src["weights_sha256"]
    assert manifest["source_adapter"] == ad
    # The bundle alone reproduces the adapted model, not the base.
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(PROBE, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], peft_logits, atol=1e-4)


def test_int8_compiles_with_base_from_the_cli(adapter, tiny_classifier, tmp_path):
    # The adapter names a hub id; --base points at the local folder instead.
    path = _copy(adapter[0], tmp_path / "adapter", base_model_name_or_path="org/tiny-bert")
    out = tmp_path / "int8"
    result = CliRunner().invoke(cli, ["compile", str(path), "-t", "x86-int8", "-o", str(out),
                                      "--base", str(tiny_classifier), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["status"] == "PASSED" and report["source"]["path"] == str(tiny_classifier)
    assert report["source"]["adapter"]["base_model_name_or_path"] == "org/tiny-bert"
    assert read_manifest(out)["source_adapter"]["weights_sha256"] == report["source"]["adapter"][
        "weights_sha256"]


def test_tokenizer_comes_from_the_adapter_when_it_has_one(adapter, tiny_classifier, tmp_path):
    from transformers import AutoTokenizer

    path = _copy(adapter[0], tmp_path / "adapter")
    AutoTokenizer.from_pretrained(tiny_classifier).save_pretrained(path)
    src = inspect_model(str(path))
    assert src.adapter.tokenizer_path == path and src.adapter.describe()["tokenizer_from"] == "adapter"


def test_classifier_adapter_may_bring_its_head_to_a_headless_base(adapter, tiny_embedder, tmp_path):
    # SEQ_CLS on a plain BertModel is fine when the adapter saves the classifier...
    src = inspect_model(str(adapter[0]), base=str(tiny_embedder))
    assert src.task == "text-classification" and src.path == tiny_embedder
    # ...and a mismatch when it does not.
    path = _copy(adapter[0], tmp_path / "adapter", modules_to_save=None)
    with pytest.raises(ModelError, match="no classification head"):
        inspect_model(str(path), base=str(tiny_embedder))


def test_adapter_that_does_not_fit_its_base_is_refused(adapter, tmp_path):
    # The config targets modules the weights file has no deltas for.
    path = _copy(adapter[0], tmp_path / "adapter", target_modules=["query", "key", "value"])
    with pytest.raises(ModelError, match="does not fit its base"):
        load_torch(inspect_model(str(path)))


def test_causal_lm_adapter_merges(tiny_llama_lm, tmp_path):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_lm).eval()
    # init_lora_weights=False: random deltas, so merging has something to get right.
    model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj"])).eval()
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits.numpy()
    model.save_pretrained(tmp_path / "adapter")
    src = inspect_model(str(tmp_path / "adapter"))
    assert src.task == "text-generation" and src.path == tiny_llama_lm
    merged = load_torch(src).model
    with torch.inference_mode():
        np.testing.assert_allclose(merged(input_ids=ids).logits.numpy(), expected, atol=1e-4)


# --- refusals through the CLI: one line, exit 2, nothing written ----------------------------


def _refused(args, tmp_path, needle):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compile", *args, "-t", "x86-int8", "-o", str(out)])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("edgeopt: error:") and "\n" not in err, err
    assert needle in err, err
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    return err


def test_base_not_local_names_it_and_asks_for_base(adapter, tmp_path):
    path = _copy(adapter[0], tmp_path / "adapter", base_model_name_or_path="org/tiny-bert")
    err = _refused([str(path)], tmp_path, "'org/tiny-bert'")
    assert "--base DIR" in err


def test_pickle_adapter_refused(adapter, tmp_path):
    path = _copy(adapter[0], tmp_path / "adapter")
    (path / "adapter_model.safetensors").rename(path / "adapter_model.bin")
    _refused([str(path)], tmp_path, "--allow-pickle")


@pytest.mark.parametrize("task_type", ["FEATURE_EXTRACTION", "CAUSAL_LM"])
def test_task_mismatch_refused(adapter, tmp_path, task_type):
    path = _copy(adapter[0], tmp_path / "adapter", task_type=task_type)
    err = _refused([str(path)], tmp_path, "BertForSequenceClassification (text-classification)")
    assert task_type in err


def test_task_flag_must_fit_the_adapter(adapter, tmp_path):
    _refused([str(adapter[0]), "--task", "feature-extraction"], tmp_path, "does not fit")


def test_base_flag_needs_an_adapter(tiny_classifier, tmp_path):
    _refused([str(tiny_classifier), "--base", str(tiny_classifier)], tmp_path, "drop --base")


def test_adapter_without_peft_names_the_extra(adapter, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an install without peft looks like
    _refused([str(adapter[0])], tmp_path, "pip install 'edgeopt[lora]'")


def test_edgeopt_imports_without_peft():
    code = ("import sys; sys.modules['peft'] = None\n"
            "import edgeopt, edgeopt.api, edgeopt.cli, edgeopt.lora, edgeopt.source\n"
            "from edgeopt.cli import cli\n"
            "try:\n    cli(['compile', '--help'])\nexcept SystemExit:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    code = "import sys, edgeopt.api, edgeopt.lora; assert 'peft' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
