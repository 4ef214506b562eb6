"""The tokenizer side of vocabulary trimming: which ids must stay, and a ``tokenizer.json``
that holds only the kept ones (WordPiece for the BERT family; BPE for GPT-2, Llama,
RoBERTa and other byte-level or sentencepiece-style BPE tokenizers).

The contract. ``K`` is the set of kept old ids and ``r`` maps an old id to its rank in
``K`` (the old order is kept, so ``r`` is increasing). For every text:

1. *Exact*: if every id the old tokenizer gives the text is in ``K``, the new tokenizer
   gives exactly ``r(old ids)``, special tokens included.
2. *Total*: otherwise each word that used a dropped piece is spelled with kept pieces
   (shorter ones, down to single characters or bytes, which are all kept): a word the old
   tokenizer spelled without the unknown token is spelled without it, and the new ids
   decode to the same text as the old ones.

Why it holds. WordPiece is greedy longest-match-first over the vocabulary: when the old
pieces of a word are kept, each was the longest match in the full vocabulary, so it is
still the longest in the kept subset. BPE applies the lowest-ranked merge present: a kept
merge needs its result and both parts kept, and the kept set is closed under "the parts
of every merge that makes a kept token", so every merge the old run applied is kept and
keeps its relative rank; merges that were absent cannot win. For totality, every
single-character piece (WordPiece: both ``c`` and ``##c``) and every BPE base symbol
(a vocabulary entry no merge makes: the 256 byte symbols, ``<0xNN>`` fallbacks) is kept,
as is every piece holding a character that lacks one of its two WordPiece forms.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from edgeopt.errors import ModelError

SUPPORTED = ("WordPiece", "BPE")


@dataclass(frozen=True)
class TokenizerVocab:
    """A parsed ``tokenizer.json`` and the facts trimming needs from it."""

    data: dict[str, Any]

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerVocab:
        """From a transformers fast tokenizer (its backend's JSON)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelError(f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer; "
                             "vocabulary trimming rewrites tokenizer.json")
        data = json.loads(backend.to_str())
        kind = data["model"].get("type")
        if kind not in SUPPORTED:
            raise ModelError(f"vocabulary trimming supports {' and '.join(SUPPORTED)} tokenizers; "
                             f"this one is {kind}")
        if kind == "BPE" and data["model"].get("dropout"):
            raise ModelError("the BPE tokenizer has dropout set (random merges); trimming needs "
                             "a deterministic tokenizer")
        return cls(data)

    @property
    def kind(self) -> str:
        return self.data["model"]["type"]

    @property
    def vocab(self) -> dict[str, int]:
        return self.data["model"]["vocab"]

    def size(self) -> int:
        """Ids the tokenizer can emit: one past the largest (added tokens included)."""
        ids = [*self.vocab.values(), *(t["id"] for t in self.data.get("added_tokens") or [])]
        return max(ids) + 1

    # -- what must stay ----------------------------------------------------------------
    def special_ids(self) -> set[int]:
        """Added tokens, the unknown token and every id the post-processor or padding writes."""
        ids = {t["id"] for t in self.data.get("added_tokens") or []}
        unk = self.data["model"].get("unk_token")
        if unk is not None and unk in self.vocab:
            ids.add(self.vocab[unk])
        ids |= set(_processor_ids(self.data.get("post_processor")))
        padding = self.data.get("padding") or {}
        if "pad_id" in padding:
            ids.add(int(padding["pad_id"]))
        return ids

    def spelling_ids(self) -> set[int]:
        """The pieces any word can fall back to (see the module's contract)."""
        if self.kind == "WordPiece":
            return self._wordpiece_spelling()
        made = set(self._producers)
        return {i for t, i in self.vocab.items() if t not in made}

    def _wordpiece_spelling(self) -> set[int]:
        prefix = self.data["model"].get("continuing_subword_prefix") or "##"
        bare = {t for t in self.vocab if len(t) == 1}
        cont = {t[len(prefix):] for t in self.vocab if t.startswith(prefix) and len(t) == len(prefix) + 1}
        both = bare & cont
        keep = set()
        for token, i in self.vocab.items():
            body = token[len(prefix):] if token.startswith(prefix) and len(token) > len(prefix) else token
            # A single-character piece, or one holding a character that cannot be spelled
            # on its own in both positions: dropping it could leave a word unspellable.
            if len(body) == 1 or any(c not in both for c in body):
                keep.add(i)
        return keep

    def close(self, ids: Iterable[int]) -> set[int]:
        """``ids`` plus, for BPE, the parts of every merge that makes a kept token (and
        their parts, down to base symbols): the merges that built a kept token stay."""
        kept = set(ids)
        if self.kind != "BPE":
            return kept
        producers = self._producers
        tokens = {i: t for t, i in self.vocab.items()}
        stack = [tokens[i] for i in kept if i in tokens]
        while stack:
            for a, b in producers.get(stack.pop(), ()):
                for part in (a, b):
                    if self.vocab[part] not in kept:
                        kept.add(self.vocab[part])
                        stack.append(part)
        return kept

    def _merges(self) -> list[tuple[str, str]]:
        # tokenizers >= 0.20 writes a merge as [a, b]; older files as "a b".
        return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
                for m in self.data["model"].get("merges") or []]

    def _merge_result(self, a: str, b: str) -> str:
        # With a continuing-subword prefix the right part loses it in the merged token.
        prefix = self.data["model"].get("continuing_subword_prefix") or ""
        return a + b[len(prefix):]

    @cached_property
    def _producers(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for a, b in self._merges():
            out.setdefault(self._merge_result(a, b), []).append((a, b))
        return out

    # -- the rewrite ---------------------------------------------------------------------
    def rewrite(self, kept: np.ndarray) -> dict[str, Any]:
        """A new ``tokenizer.json`` dict holding only ``kept`` (sorted old ids), renumbered
        by rank; BPE keeps a merge only when its result and both parts are kept."""
        new_id = {int(old): new for new, old in enumerate(kept)}
        data = json.loads(json.dumps(self.data))  # a deep copy
        model = data["model"]
        model["vocab"] = {t: new_id[i] for t, i in self.vocab.items() if i in new_id}
        if self.kind == "BPE":
            vocab = model["vocab"]
            model["merges"] = [m for m, (a, b) in zip(self.data["model"].get("merges") or [],
                                                      self._merges(), strict=True)
                               if a in vocab and b in vocab and self._merge_result(a, b) in vocab]
        for token in data.get("added_tokens") or []:
            token["id"] = new_id[token["id"]]
        _remap_processor(data.get("post_processor"), new_id)
        if data.get("padding") and "pad_id" in data["padding"]:
            data["padding"]["pad_id"] = new_id[int(data["padding"]["pad_id"])]
        return data


def legacy_files(data: dict[str, Any]) -> dict[str, str]:
    """The slow-tokenizer files beside ``tokenizer.json`` (tools that read a plain vocabulary,
    such as onnxruntime-extensions' tokenizer ops): ``vocab.txt`` for WordPiece, one token
    per line in id order; ``vocab.json`` and ``merges.txt`` for BPE."""
    model = data["model"]
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _t, i in by_id] != list(range(len(by_id))):
        raise ValueError("the vocabulary ids are not 0..n-1")
    if model["type"] == "WordPiece":
        return {"vocab.txt": "".join(f"{t}\n" for t, _i in by_id)}
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []]
    return {"vocab.json": json.dumps(dict(by_id), ensure_ascii=False),
            "merges.txt": "#version: 0.2\n" + "".join(f"{m}\n" for m in merges)}


def _processor_ids(proc: dict[str, Any] | None) -> Iterable[int]:
    if not proc:
        return
    kind = proc.get("type")
    if kind == "Sequence":
        for inner in proc.get("processors") or []:
            yield from _processor_ids(inner)
    elif kind == "TemplateProcessing":
        for special in (proc.get("special_tokens") or {}).values():
            yield from special["ids"]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        yield proc["sep"][1]
        yield proc["cls"][1]


def _remap_processor(proc: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    if not proc:
        return
    kind = proc.get("type")
    if kind == "Sequence":
        for inner in proc.get("processors") or []:
            _remap_processor(inner, new_id)
    elif kind == "TemplateProcessing":
        for special in (proc.get("special_tokens") or {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], new_id[proc[key][1]]]
