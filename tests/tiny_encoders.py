"""Tiny random encoders of the newer families, built in code with offline tokenizers.

DeBERTa-v2/v3 and ALBERT ship sentencepiece (Unigram) tokenizers and ModernBERT a
byte-level BPE; each is trained here in well under a second on the built-in sentences,
so inputs have natural, varied lengths. Every tokenizer claims ``token_type_ids`` (as
DeBERTa's and older saved folders do), so the tests see which families drop them.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WITH_TOKEN_TYPES = ["input_ids", "token_type_ids", "attention_mask"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _sentences() -> list[str]:
    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _fast_tokenizer(tok: Any) -> Any:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_input_names=WITH_TOKEN_TYPES)


def unigram_tokenizer() -> Any:
    """A sentencepiece-style Unigram tokenizer (``▁word`` pieces), like DeBERTa's and ALBERT's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=SPECIAL, unk_token="[UNK]",
                                      show_progress=False)
    tok.train_from_iterator(_sentences(), trainer)
    return _fast_tokenizer(tok)


def bpe_tokenizer() -> Any:
    """A byte-level BPE tokenizer with [CLS]/[SEP], like ModernBERT's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_sentences(), trainer)
    return _fast_tokenizer(tok)


# 2 layers, hidden 64, 4 heads, like conftest's BERT; 128 positions so the built-in
# sentences keep their own lengths.
_SIZE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "max_position_embeddings": 128, "pad_token_id": 0}


def _config(family: str, vocab: int, **extra: Any) -> Any:
    from transformers import AlbertConfig, DebertaV2Config, ModernBertConfig

    if family == "deberta-v2":
        # DeBERTa-v3's shape: relative attention with log buckets, no absolute positions,
        # no segment embeddings.
        return DebertaV2Config(vocab_size=vocab, type_vocab_size=0, relative_attention=True,
                               position_buckets=32, max_relative_positions=128,
                               pos_att_type=["p2c", "c2p"], position_biased_input=False,
                               norm_rel_ebd="layer_norm", share_att_key=True, **_SIZE, **extra)
    if family == "modernbert":
        # Alternating global and sliding-window (16-token) attention, rotary positions.
        return ModernBertConfig(vocab_size=vocab, global_attn_every_n_layers=2,
                                local_attention=16, cls_token_id=2, sep_token_id=3,
                                bos_token_id=2, eos_token_id=3, **_SIZE, **extra)
    if family == "albert":
        # Factorised embeddings (32 wide, projected to 64) and one shared layer.
        return AlbertConfig(vocab_size=vocab, embedding_size=32, **_SIZE, **extra)
    raise ValueError(family)


_CLASSES = {
    ("deberta-v2", "text-classification"): "DebertaV2ForSequenceClassification",
    ("deberta-v2", "feature-extraction"): "DebertaV2Model",
    ("deberta-v2", "token-classification"): "DebertaV2ForTokenClassification",
    ("modernbert", "text-classification"): "ModernBertForSequenceClassification",
    ("modernbert", "feature-extraction"): "ModernBertModel",
    ("modernbert", "token-classification"): "ModernBertForTokenClassification",
    ("albert", "text-classification"): "AlbertForSequenceClassification",
    ("albert", "feature-extraction"): "AlbertModel",
    ("albert", "token-classification"): "AlbertForTokenClassification",
}


def build(family: str, task: str, path: Path, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model for ``task`` and its tokenizer into ``path``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tok = bpe_tokenizer() if family == "modernbert" else unigram_tokenizer()
    labels = {"text-classification": ["negative", "positive"],
              "token-classification": NER_LABELS}.get(task)
    extra = {} if labels is None else {"id2label": dict(enumerate(labels)),
                                        "label2id": {n: i for i, n in enumerate(labels)}}
    model_class = getattr(transformers, _CLASSES[family, task])
    model_class(_config(family, len(tok), **extra)).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def graph_inputs(bundle: Path) -> list[str]:
    """The input names a bundle's manifest declares."""
    return [i["name"] for i in json.loads((bundle / "manifest.json").read_text())["inputs"]]
