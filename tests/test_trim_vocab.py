"""Vocabulary trimming: the tokenizer contract (kept text gets the old ids renumbered, any
other text is respelled in kept pieces and decodes the same), exact embedding slicing, a
folder that reloads with plain transformers, and a compile end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fast_recipe

import edgeopt
from edgeopt.artifact import LoadedModel
from edgeopt.errors import ModelError, RecipeError
from edgeopt.evaldata import builtin_sentences
from edgeopt.prepare.tokenizer_remap import TokenizerVocab
from edgeopt.prepare.trim_vocab import check_ids, trim_vocabulary
from edgeopt.recipe_prepare import TrimVocabConfig
from edgeopt.recipe_yaml import recipe_from_dict

SENTENCES = list(builtin_sentences().texts)
DOMAIN, HELD_OUT = SENTENCES[:30], SENTENCES[30:]
TRICKY = ["", "   ", "Crème brûlée, naïve café, Ångström", "emoji 🤗🚀 and ✓ marks",
          "x" * 150, "supercalifragilisticexpialidocious antidisestablishmentarianism",
          "ALL CAPS SHOUTING", "tab\tand\nnewline", "日本語のテキスト", "a-b_c/d.e:f"]


def _load(path: Path, causal: bool = False) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    cls = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    return LoadedModel(cls.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))


def _trim(loaded: LoadedModel, tmp_path: Path, texts=DOMAIN, **config):
    return trim_vocabulary(loaded, texts, TrimVocabConfig(**config), tmp_path / "tok")


@pytest.fixture(scope="module")
def bert(tiny_wordpiece_classifier, tmp_path_factory):
    loaded = _load(tiny_wordpiece_classifier)
    return loaded, _trim(loaded, tmp_path_factory.mktemp("trim-bert"))


@pytest.fixture(scope="module")
def llama(tiny_llama_lm, tmp_path_factory):
    loaded = _load(tiny_llama_lm, causal=True)
    return loaded, _trim(loaded, tmp_path_factory.mktemp("trim-llama"))


def _ids(tok, text: str) -> list[int]:
    return tok(text)["input_ids"]


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_kept_words_get_the_old_ids_renumbered(which, request):
    loaded, trimmed = request.getfixturevalue(which)
    old, new = loaded.tokenizer, trimmed.loaded.tokenizer
    assert trimmed.rows_after < trimmed.rows_before and len(new) == trimmed.rows_after
    for text in DOMAIN:
        assert _ids(new, text) == trimmed.remap[_ids(old, text)].tolist()
    check = check_ids(old, new, trimmed.remap, DOMAIN)
    assert check.ok and check.exact == len(DOMAIN)


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_dropped_words_are_respelled_without_unk(which, request):
    loaded, trimmed = request.getfixturevalue(which)
    old, new = loaded.tokenizer, trimmed.loaded.tokenizer
    check = check_ids(old, new, trimmed.remap, HELD_OUT + TRICKY)
    assert check.ok, check.failures
    assert check.respelled >= 10  # the held-out text really used dropped pieces
    for text in HELD_OUT + TRICKY:
        old_ids, new_ids = _ids(old, text), _ids(new, text)
        if old.unk_token_id not in old_ids:
            assert new.unk_token_id not in new_ids or new.unk_token_id == new.eos_token_id
            assert new.decode(new_ids, skip_special_tokens=True) == \
                old.decode(old_ids, skip_special_tokens=True)
        assert len(new_ids) >= len(old_ids)  # never fewer pieces than before


def test_wordpiece_tricky_text(bert):
    loaded, trimmed = bert
    old, new = loaded.tokenizer, trimmed.loaded.tokenizer
    assert _ids(new, "") == trimmed.remap[_ids(old, "")].tolist() == [new.cls_token_id, new.sep_token_id]
    # A word past max_input_chars_per_word and a character outside the vocabulary are the
    # unknown token before and after; accents still fold as before.
    assert new.unk_token_id in _ids(new, "x" * 150) and old.unk_token_id in _ids(old, "x" * 150)
    assert new.decode(_ids(new, "Crème brûlée"), skip_special_tokens=True) == "creme brulee"
    for key in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "mask_token_id"):
        assert getattr(new, key) == trimmed.remap[getattr(old, key)]
    assert trimmed.loaded.model.config.pad_token_id == trimmed.remap[loaded.model.config.pad_token_id]


def test_single_characters_and_specials_are_always_kept(bert, llama):
    for loaded, trimmed in (bert, llama):
        vocab = loaded.tokenizer.get_vocab()
        kept = set(trimmed.kept.tolist())
        singles = {i for t, i in vocab.items() if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
        assert singles <= kept and set(loaded.tokenizer.all_special_ids) <= kept


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_logits_on_kept_text_equal_the_original(which, request):
    loaded, trimmed = request.getfixturevalue(which)
    old, new = loaded.tokenizer, trimmed.loaded.tokenizer
    with torch.inference_mode():
        for text in DOMAIN[:6]:
            before = loaded.model(**old(text, return_tensors="pt")).logits
            after = trimmed.loaded.model(**new(text, return_tensors="pt")).logits
            if which == "llama":  # the LM head keeps the kept rows: compare those columns
                before = before[..., torch.as_tensor(trimmed.kept)]
            torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    # The input is not touched.
    assert loaded.model.get_input_embeddings().weight.shape[0] == trimmed.rows_before


def test_tied_head_stays_tied_and_untied_head_is_sliced(llama, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    _loaded, trimmed = llama
    model = trimmed.loaded.model
    assert model.lm_head.weight is model.get_input_embeddings().weight and trimmed.tables == 1
    assert model.config.vocab_size == trimmed.rows_after
    torch.manual_seed(0)
    tok = _loaded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    untied = LoadedModel(LlamaForCausalLM(cfg).eval(), tok)
    cut = _trim(untied, tmp_path)
    head = cut.loaded.model.lm_head.weight
    assert cut.tables == 2 and head is not cut.loaded.model.get_input_embeddings().weight
    assert torch.equal(head, untied.model.lm_head.weight[torch.as_tensor(cut.kept)])
    assert cut.parameters_saved() == (cut.rows_before - cut.rows_after) * 32 * 2


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_trimmed_folder_reloads_with_plain_transformers(which, request, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    loaded, trimmed = request.getfixturevalue(which)
    trimmed.loaded.model.save_pretrained(tmp_path)
    trimmed.loaded.tokenizer.save_pretrained(tmp_path)
    back = _load(tmp_path, causal=which == "llama")
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == trimmed.rows_after
    assert AutoModel.from_pretrained(tmp_path).get_input_embeddings().weight.shape[0] == trimmed.rows_after
    text = DOMAIN[3]
    assert _ids(tok, text) == trimmed.remap[_ids(loaded.tokenizer, text)].tolist()
    with torch.inference_mode():
        feeds = tok(text, return_tensors="pt")
        torch.testing.assert_close(back.model(**feeds).logits, trimmed.loaded.model(**feeds).logits,
                                   atol=0, rtol=0)


def test_plain_vocabulary_files_match_the_tokenizer(bert, llama):
    from transformers import BertTokenizer

    _loaded, trimmed = bert
    lines = trimmed.files["vocab.txt"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == trimmed.rows_after
    from_vocab = BertTokenizer(vocab=str(trimmed.files["vocab.txt"]))
    for text in HELD_OUT[:10]:
        assert _ids(from_vocab, text) == _ids(trimmed.loaded.tokenizer, text)
    _loaded, cut = llama
    vocab = json.loads(cut.files["vocab.json"].read_text(encoding="utf-8"))
    merges = cut.files["merges.txt"].read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(vocab.values()) == list(range(cut.rows_after))
    # A kept merge needs its two parts and its result kept.
    assert merges and all(a in vocab and b in vocab and a + b in vocab
                          for a, b in (m.split(" ") for m in merges))


def test_merges_in_the_old_string_format_are_kept_as_strings(llama):
    loaded, trimmed = llama
    vocab = TokenizerVocab.of(loaded.tokenizer)
    data = json.loads(json.dumps(vocab.data))
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    as_strings = TokenizerVocab(data).rewrite(trimmed.kept)["model"]["merges"]
    as_lists = vocab.rewrite(trimmed.kept)["model"]["merges"]
    assert as_strings == [" ".join(m) for m in as_lists] and as_lists


def test_min_count_and_max_vocab(tiny_wordpiece_classifier, bert, tmp_path):
    loaded, full = bert
    rare = _trim(loaded, tmp_path / "a", min_count=3)
    assert rare.rows_after < full.rows_after
    capped = _trim(loaded, tmp_path / "b", max_vocab=full.rows_after - 20)
    assert capped.rows_after <= full.rows_after - 20
    for cut in (rare, capped):
        check = check_ids(loaded.tokenizer, cut.loaded.tokenizer, cut.remap, DOMAIN)
        assert check.ok and check.respelled > 0
    with pytest.raises(RecipeError, match="max_vocab 10 is below"):
        _trim(loaded, tmp_path / "c", max_vocab=10)


def test_unigram_tokenizers_are_refused(tmp_path):
    from tiny_encoders import build

    path = build("albert", "text-classification", tmp_path / "albert")
    with pytest.raises(ModelError, match="supports WordPiece and BPE tokenizers; this one is Unigram"):
        _trim(_load(path), tmp_path)


def test_recipe_section_parses_and_checks():
    base = {"name": "r", "description": "d"}
    recipe = recipe_from_dict({**base, "prepare": [{"stage": "trim-vocab", "min_count": 2,
                                                    "extra_text": ["more.txt"]}]})
    assert recipe.prepare == (TrimVocabConfig(min_count=2, extra_text=("more.txt",)),)
    with pytest.raises(RecipeError, match="min_count must be >= 1"):
        recipe_from_dict({**base, "prepare": [{"stage": "trim-vocab", "min_count": 0}]})


def test_compile_a_trimmed_classifier_end_to_end(tiny_wordpiece_classifier, tmp_path):
    from transformers import AutoTokenizer

    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(DOMAIN)),
                     encoding="utf-8")
    recipe = dataclasses.replace(fast_recipe("x86-int8"), prepare=(TrimVocabConfig(),))
    with pytest.raises(RecipeError, match="--train-data"):
        edgeopt.compile(str(tiny_wordpiece_classifier), recipe=recipe, out=tmp_path / "none")
    report = edgeopt.compile(str(tiny_wordpiece_classifier), recipe=recipe, out=tmp_path / "b",
                             train_data=train)
    assert report.passed
    stage = next(p for p in report.passes if p["name"] == "prepare:trim-vocab")
    rows = int(stage["notes"]["vocab_rows"].split(" -> ")[1].split(" ")[0].replace(",", ""))
    assert stage["notes"]["domain_ids"].startswith(f"{len(DOMAIN)}/{len(DOMAIN)} rows with the same ids")
    assert "eval_ids" in stage["notes"]  # the built-in eval sentences, checked too
    bundle = tmp_path / "b"
    shipped = AutoTokenizer.from_pretrained(bundle)
    assert len(shipped) == rows < 700
    assert len((bundle / "vocab.txt").read_text(encoding="utf-8").splitlines()) == rows
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = shipped(HELD_OUT[:4], padding=True, return_tensors="np")
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    assert session.run(None, feeds)[0].shape == (4, 2)  # respelled words run too


def test_compile_a_trimmed_decoder_keeps_cache_parity(tiny_llama_lm, tmp_path):
    from transformers import AutoTokenizer

    from edgeopt.decoder.validate import DecoderEvalConfig
    from edgeopt.recipe import BenchConfig

    train = tmp_path / "train.txt"
    train.write_text("\n".join(DOMAIN), encoding="utf-8")
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), prepare=(TrimVocabConfig(),),
                                 bench=BenchConfig(seq_len=16, decode_tokens=4, warmup=1, repeats=3,
                                                   torch_baseline=False))
    small = DecoderEvalConfig(max_tokens=256, window=128, prompts=2, new_tokens=6)
    report = edgeopt.compile(tiny_llama_lm, recipe=recipe, out=tmp_path / "lm", decoder_eval=small,
                             train_data=train)
    # The eval text uses dropped pieces: respelled, and the graph still matches PyTorch.
    notes = next(p for p in report.passes if p["name"] == "prepare:trim-vocab")["notes"]
    assert "respelled" in notes["eval_ids"]
    assert report.passed and report.parity["metrics"]["token_agreement"] == 1.0
    shipped = AutoTokenizer.from_pretrained(tmp_path / "lm")
    manifest = json.loads((tmp_path / "lm" / "manifest.json").read_text())
    assert manifest["decoder"]["vocab_size"] == len(shipped) < 384
    assert (tmp_path / "lm" / "merges.txt").is_file() and (tmp_path / "lm" / "vocab.json").is_file()


def test_a_bpe_encoder_with_cls_and_sep(tmp_path):
    from tiny_encoders import build

    loaded = _load(build("modernbert", "text-classification", tmp_path / "mb"))
    trimmed = _trim(loaded, tmp_path)
    old, new = loaded.tokenizer, trimmed.loaded.tokenizer
    assert trimmed.rows_after < trimmed.rows_before
    exact = check_ids(old, new, trimmed.remap, DOMAIN)
    other = check_ids(old, new, trimmed.remap, HELD_OUT + TRICKY)
    assert exact.ok and exact.exact == len(DOMAIN) and other.ok and other.respelled > 0
    assert _ids(new, DOMAIN[0])[0] == new.cls_token_id == trimmed.remap[old.cls_token_id]
    with torch.inference_mode():
        before = loaded.model(**old(DOMAIN[1], return_tensors="pt")).logits
        after = trimmed.loaded.model(**new(DOMAIN[1], return_tensors="pt")).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)


def test_roberta_style_post_processor_ids_are_renumbered(llama):
    loaded, trimmed = llama
    data = json.loads(json.dumps(TokenizerVocab.of(loaded.tokenizer).data))
    eos = loaded.tokenizer.eos_token
    eos_id = data["model"]["vocab"][eos]
    data["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        {"type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [eos, eos_id],
         "trim_offsets": True, "add_prefix_space": False}]}
    vocab = TokenizerVocab(data)
    assert eos_id in vocab.special_ids()
    proc = vocab.rewrite(trimmed.kept)["post_processor"]["processors"][1]
    assert proc["sep"] == [eos, int(trimmed.remap[eos_id])] == proc["cls"]


def test_the_stage_fails_when_the_new_tokenizer_breaks_the_contract(tiny_wordpiece_classifier,
                                                                   tmp_path, monkeypatch):
    rewrite = TokenizerVocab.rewrite

    def swapped(self, kept):  # a broken rewrite: two kept word pieces trade ids
        data = rewrite(self, kept)
        vocab = data["model"]["vocab"]
        other = next(t for t in vocab if t.isalpha() and len(t) > 3)
        vocab["the"], vocab[other] = vocab[other], vocab["the"]
        return data

    monkeypatch.setattr(TokenizerVocab, "rewrite", swapped)
    train = tmp_path / "train.txt"
    train.write_text("\n".join(DOMAIN), encoding="utf-8")
    recipe = dataclasses.replace(fast_recipe("x86-fp32"), prepare=(TrimVocabConfig(),))
    with pytest.raises(ModelError, match="broke the id contract on .* domain rows"):
        edgeopt.compile(str(tiny_wordpiece_classifier), recipe=recipe, out=tmp_path / "b",
                        train_data=train)

