"""Text in, answer out: the tokenizer inside the graph (onnxruntime-extensions).

Tiny models with random weights: a WordPiece BERT classifier and embedder, a byte-level
BPE RoBERTa classifier, and the GPT-2 / Llama style byte-level tokenizers alone. The
graph's ids are compared with transformers' on tricky text; the compile checks every
eval row itself and judges parity from the strings.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

from helpers import fast_recipe  # noqa: E402

import edgeopt  # noqa: E402
from edgeopt.errors import ModelError, UsageError  # noqa: E402

TRICKY = [
    "Héllo wörld, naïve café — Ünïcödé ÀÉÎ",
    "the movie 😀🎬 was 👍 fun",
    "a" * 150,  # longer than WordPiece's longest word: one [UNK]
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
    "   ",
    "\t\n ",
    "中文字符测试 and 日本語",
    "it's a good movie! " * 30,  # truncated at the model's limit
    "numbers 12345 and 3.14, punctuation?!...",
    "MiXeD CaSe   multiple   spaces",
    "I'M SURE we'LL see 1234567 in 2024\r\nok",  # Llama 3 splits: case-blind 'm, digits in threes
]


def _wordpiece_tokenizer():
    """A WordPiece vocabulary with every letter and its ``##`` continuation: words split
    into pieces the way a real BERT vocabulary splits them."""
    from conftest import SPECIAL, WORDS
    from transformers import BertTokenizer

    chars = list(string.ascii_lowercase + string.digits + string.punctuation) + ["中", "文"]
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = list(dict.fromkeys(SPECIAL + WORDS + chars + pieces + ["##ing", "##ed", "##s"]))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tok.model_max_length = 32  # so TRICKY's long rows are truncated
    return tok


def _bpe_tokenizer(specials: bool):
    """Byte-level BPE trained on the built-in sentences; ``specials``: RoBERTa's
    ``<s> ... </s>`` around each text, else GPT-2's bare ids."""
    from importlib import resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    names = ["<s>", "<pad>", "</s>", "<unk>"] if specials else ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=names, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    if specials:
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       pad_token="<pad>", unk_token="<unk>", model_max_length=32)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos,
                                   pad_token=eos, unk_token=eos, model_max_length=32)


def _llama3_tokenizer():
    """Byte-level BPE with Llama 3's own Split pattern (digits in threes, case-blind
    contractions) before a ByteLevel step that splits no further, and a BOS template."""
    from importlib import resources

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    names = ["<|begin_of_text|>", "<|end_of_text|>"]
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=400, special_tokens=names, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=names[0], eos_token=names[1],
                                   pad_token=names[1], model_max_length=32)


def _bos_left_tokenizer():
    """Byte-level BPE with a BOS before every text (no EOS) and left padding, as
    decoder-style tokenizers are set up."""
    from tokenizers import processors

    tok = _bpe_tokenizer(specials=False)
    backend = tok.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", tok.eos_token_id)])
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def wordpiece_classifier(tmp_path_factory) -> Path:
    import torch
    from conftest import _tiny_bert_config
    from transformers import BertForSequenceClassification

    torch.manual_seed(2)
    tok = _wordpiece_tokenizer()
    path = tmp_path_factory.mktemp("wp-classifier")
    cfg = _tiny_bert_config(num_labels=2, id2label={0: "negative", 1: "positive"},
                            label2id={"negative": 0, "positive": 1})
    cfg.vocab_size = len(tok)
    BertForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bpe_classifier(tmp_path_factory) -> Path:
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(3)
    tok = _bpe_tokenizer(specials=True)
    path = tmp_path_factory.mktemp("bpe-classifier")
    # RoBERTa numbers positions from pad_id + 1: two more rows than the longest sequence.
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=34,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2)
    RobertaForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _eval_file(tmp_path: Path) -> Path:
    from importlib import resources

    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")][:40]
    rows += [t.replace("\t", " ").replace("\r", " ").replace("\n", " ") for t in TRICKY]
    path = tmp_path / "eval.tsv"
    path.write_text("sentence\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _graph_ids(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    from edgeopt.passes.tokenizer_graph import custom_ops_library, plan_tokenizer, tokenizer_model

    plan = plan_tokenizer(tok, 32)
    options = ort.SessionOptions()
    options.register_custom_ops_library(custom_ops_library())
    session = ort.InferenceSession(tokenizer_model(plan, 17, 8).SerializeToString(), options)
    ids, mask, _ = session.run(None, {"text": np.array(texts, dtype=object)})
    return ids, mask


@pytest.mark.parametrize("make", [_wordpiece_tokenizer, lambda: _bpe_tokenizer(True),
                                  lambda: _bpe_tokenizer(False), _bos_left_tokenizer,
                                  _llama3_tokenizer],
                         ids=["wordpiece", "roberta-bpe", "gpt2-bpe", "bos-left-padded-bpe",
                              "llama3-split-bpe"])
def test_graph_ids_equal_transformers_on_tricky_text(make):
    tok = make()
    # One string at a time, and the whole batch padded as transformers pads it.
    for text in TRICKY:
        ids, mask = _graph_ids(tok, [text])
        want = tok([text], padding=True, truncation=True, max_length=32, return_tensors="np")
        assert ids.tolist() == want["input_ids"].tolist(), text
        assert mask.tolist() == want["attention_mask"].tolist(), text
    ids, mask = _graph_ids(tok, TRICKY)
    want = tok(TRICKY, padding=True, truncation=True, max_length=32, return_tensors="np")
    assert ids.shape == want["input_ids"].shape
    assert (ids == want["input_ids"]).all() and (mask == want["attention_mask"]).all()
    assert ids.shape[1] == 32  # the long rows were truncated to the limit


def test_wordpiece_classifier_takes_text(wordpiece_classifier, tmp_path):
    out = tmp_path / "bundle"
    report = edgeopt.compile(str(wordpiece_classifier), recipe=fast_recipe("x86-int8"), out=out,
                             eval_data=_eval_file(tmp_path), text_input=True)
    section = next(s for s in report.sections if s.key == "text_input")
    # Every eval row (blank lines are not rows: the eval reader skips them).
    assert section.rows_checked == section.rows_equal == report.parity["rows"] >= 45
    # Judged from text: the same agreement as from token ids (same ids, same graph).
    assert section.text_in["label_agreement"] == section.token_in["label_agreement"]
    assert report.parity["reference"].endswith("judged from text (tokenizer in the graph)")
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["text_input"]
    assert entry["model"] == "model.text.onnx" and (out / "model.text.onnx").is_file()
    assert entry["inputs"] == [{"name": "text", "dtype": "string", "shape": ["batch"]}]
    assert [o["name"] for o in entry["outputs"]] == ["logits", "input_ids", "attention_mask", "label"]
    assert entry["custom_ops"]["library"] == "onnxruntime-extensions"
    assert entry["custom_ops"]["ops"] == ["BertTokenizer"]
    rows = report.parity["rows"]
    assert entry["ids_checked"] == {"rows_checked": rows, "rows_equal": rows,
                                    "label_output_agreement": 1.0}
    assert f"In-graph ids equal transformers' on {rows} of {rows} eval rows" in (
        out / "report.md").read_text()
    stored = json.loads((out / "report.json").read_text())["sections"]["text_input"]
    assert stored["ids"] == {"rows_checked": rows, "rows_equal": rows}
    # End to end from the bundle alone: strings in, the PyTorch labels out.
    _labels_match_torch(wordpiece_classifier, out, ["a good movie", "terrible acting", ""])


def _labels_match_torch(folder: Path, bundle: Path, texts: list[str]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeopt.passes.text_check import text_session

    session = text_session(bundle / "model.text.onnx")
    logits, label = session.run(["logits", "label"], {"text": np.array(texts, dtype=object)})
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        ref = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits.numpy()
    assert label.tolist() == ref.argmax(-1).tolist()
    assert np.abs(logits - ref).max() < 0.1  # INT8 weights: close, not equal


def _fp32_text_bundle(folder: Path, tmp_path: Path, kind: str, op: str) -> tuple[Path, dict]:
    """Compile ``folder`` for x86-fp32 with text input on the tricky eval rows; check the
    compile matched every row's ids and gave the numbers the ids give. Returns the bundle
    and its manifest's ``text_input`` entry."""
    out = tmp_path / "bundle"
    report = edgeopt.compile(str(folder), recipe=fast_recipe("x86-fp32"), out=out,
                             eval_data=_eval_file(tmp_path), text_input=True)
    section = next(s for s in report.sections if s.key == "text_input")
    assert section.tokenizer == kind and section.op == op
    assert section.rows_checked == section.rows_equal == report.parity["rows"] >= 45
    assert section.text_in["max_abs_error"] < 1e-4  # fp32: the same numbers as from ids
    entry = json.loads((out / "manifest.json").read_text())["text_input"]
    assert entry["custom_ops"]["ops"] == [op]
    return out, entry


def test_bpe_classifier_takes_text(bpe_classifier, tmp_path):
    out, entry = _fp32_text_bundle(bpe_classifier, tmp_path, "byte-level-bpe", "GPT2Tokenizer")
    # RoBERTa reads no token_type_ids: the graph must not leave them as an output.
    assert [o["name"] for o in entry["outputs"]] == ["logits", "input_ids", "attention_mask", "label"]
    assert entry["tokenizer"]["pad_id"] == 1  # <pad>, as transformers pads
    _labels_match_torch(bpe_classifier, out, ["a good movie", "terrible acting 😀", ""])


def test_llama3_split_tokenizer_takes_text(bpe_classifier, tmp_path):
    # The RoBERTa classifier with a Llama 3 style tokenizer (its own Split pattern):
    # onnxruntime-extensions' HfJsonTokenizer runs the tokenizer.json, BOS included.
    import shutil

    from edgeopt.passes.tokenizer_graph import plan_tokenizer

    tok = _llama3_tokenizer()
    assert plan_tokenizer(tok, 32).op == "HfJsonTokenizer"
    folder = tmp_path / "model"
    shutil.copytree(bpe_classifier, folder)
    for old in folder.glob("*token*"):
        old.unlink()
    tok.save_pretrained(folder)
    out, _ = _fp32_text_bundle(folder, tmp_path, "byte-level-bpe-split", "HfJsonTokenizer")
    _labels_match_torch(folder, out, ["a good movie", "I'M SURE 1234567 😀", ""])


def test_embedder_takes_text(tiny_embedder, tmp_path):
    out = tmp_path / "bundle"
    # The word-level fixture vocabulary splits like WordPiece only on its own words.
    eval_file = tmp_path / "eval.tsv"
    rows = ["the movie was good", "it is a very boring plot", "love this film"] * 6
    eval_file.write_text("sentence\n" + "\n".join(rows) + "\n")
    report = edgeopt.compile(str(tiny_embedder), recipe=fast_recipe("x86-fp32"), out=out,
                             eval_data=eval_file, text_input=True)
    section = next(s for s in report.sections if s.key == "text_input")
    assert section.rows_equal == 18 and section.text_in["cosine_min"] > 0.9999
    from edgeopt.passes.text_check import text_session

    (emb,) = text_session(out / "model.text.onnx").run(["sentence_embedding"],
                                                        {"text": np.array(["the good movie"])})
    assert np.allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)  # pooled and normalized


def test_id_mismatch_fails_the_compile_with_the_row(tiny_classifier, tmp_path):
    # The word-level fixture vocabulary has no "##" pieces: transformers maps "loved" to
    # one [UNK], onnxruntime-extensions' WordPiece to "love" + [UNK]. The compile must say so.
    eval_file = tmp_path / "eval.tsv"
    eval_file.write_text("sentence\n" + "the movie was good\n" * 16 + "loved it\n")
    with pytest.raises(ModelError, match=r"differ from transformers' on 1 of 17 eval rows; "
                                         r"first: row 17 'loved it'"):
        edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"), out=tmp_path / "b",
                        eval_data=eval_file, text_input=True)


def test_unsupported_tokenizer_is_one_line():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from edgeopt.passes.tokenizer_graph import plan_tokenizer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.Unigram([("a", -1.0)])))
    with pytest.raises(ModelError, match="only WordPiece .* and byte-level BPE") as err:
        plan_tokenizer(tok, 32)
    assert "\n" not in str(err.value)
    # SmolLM2's split (single digits before the byte-level split) is not the op's.
    bpe = _bpe_tokenizer(specials=False)
    bpe.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    with pytest.raises(ModelError, match="pre-tokenizer Sequence"):
        plan_tokenizer(bpe, 32)


def test_missing_extensions_is_one_line(monkeypatch, tiny_classifier, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # import fails
    with pytest.raises(UsageError, match="text input needs onnxruntime-extensions: pip install"):
        edgeopt.compile(str(tiny_classifier), target="x86-fp32", out=tmp_path / "b",
                        text_input=True)


def test_recipe_and_cli_set_text_input(tmp_path):
    from click.testing import CliRunner

    from edgeopt.cli import cli
    from edgeopt.recipe_yaml import recipe_from_dict

    assert recipe_from_dict({"name": "r", "description": "d", "text_input": True}).text_input
    assert not recipe_from_dict({"name": "r", "description": "d"}).text_input
    result = CliRunner().invoke(cli, ["compile", "--help"])
    assert "--text-input" in result.output
