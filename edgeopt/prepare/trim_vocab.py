"""The trim-vocab stage: a copy of the model whose word table holds only the rows the
domain text uses, with a tokenizer rewritten to match (contract in
:mod:`edgeopt.prepare.tokenizer_remap`).

Kept: every id the domain text (``--train-data``, plus ``extra_text`` and, with
``include_eval``, the eval and calibration text) tokenizes to at least ``min_count``
times, the special tokens, every id the model config names (pad, bos, eos, ...), and
every single-character piece or BPE base symbol. The word table, and the LM head with
its bias when the model has one, are sliced to those rows in the old order. The stage
re-tokenizes the domain text with the new tokenizer and fails unless every row's ids
equal the old ids renumbered."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import LoadedModel
from edgeopt.errors import ModelError, RecipeError
from edgeopt.prepare import register_prepare
from edgeopt.prepare.tokenizer_remap import TokenizerVocab, legacy_files
from edgeopt.prepare.train_text import read_train_text
from edgeopt.recipe_prepare import TrimVocabConfig

MB = 1e6
# Files a saved tokenizer may carry that the rewrite replaces (stale ids otherwise).
_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class IdCheck:
    """Old tokenizer vs new on some rows: ``exact`` rows had every token kept and got the
    renumbered ids; ``respelled`` rows used a dropped token and were spelled in kept
    pieces, decoding to the same text without a new unknown token; ``failures`` broke
    the contract (row index and why)."""

    rows: int
    exact: int
    respelled: int
    failures: tuple[tuple[int, str], ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        text = f"{self.exact:,}/{self.rows:,} rows with the same ids (renumbered)"
        if self.respelled:
            text += f", {self.respelled:,} respelled in kept pieces (same text back)"
        if self.failures:
            text += f", {len(self.failures):,} FAILED"
        return text


@dataclass(frozen=True)
class Trimmed:
    """The trimmed model and what trimming did."""

    loaded: LoadedModel
    kept: np.ndarray  # sorted old ids
    remap: np.ndarray  # old id -> new id, -1 where dropped
    rows_before: int
    hidden: int
    tables: int  # word-table copies in the weights: 1, or 2 with an untied LM head
    files: dict[str, Path]  # plain vocabulary files to ship beside tokenizer.json

    @property
    def rows_after(self) -> int:
        return len(self.kept)

    def parameters_saved(self) -> int:
        return (self.rows_before - self.rows_after) * self.hidden * self.tables

    def notes(self) -> dict[str, Any]:
        saved = self.parameters_saved()
        return {"vocab_rows": f"{self.rows_before:,} -> {self.rows_after:,} "
                              f"({100 * self.rows_after / self.rows_before:.1f}% kept)",
                "parameters_saved": f"{saved:,}",
                "mb_saved": f"{saved * 4 / MB:.2f} MB fp32, {saved / MB:.2f} MB at INT8"}


def token_counts(tokenizer: Any, texts: Sequence[str], size: int) -> np.ndarray:
    """How often each id occurs in ``texts`` (whole rows: no truncation, no special tokens)."""
    backend = _plain_backend(tokenizer)
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(texts), 4096):
        encs = backend.encode_batch(list(texts[start:start + 4096]), add_special_tokens=False)
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64)
        counts += np.bincount(ids, minlength=size)[:size]
    return counts


def trim_vocabulary(loaded: LoadedModel, texts: Sequence[str], config: TrimVocabConfig,
                    folder: Path) -> Trimmed:
    """Trim ``loaded`` to the vocabulary ``texts`` use; ``folder`` receives the new
    tokenizer files. The input is not changed."""
    import torch

    vocab = TokenizerVocab.of(loaded.tokenizer)
    table = loaded.model.get_input_embeddings().weight
    rows, hidden = int(table.shape[0]), int(table.shape[1])
    size = vocab.size()
    if size > rows:
        raise ModelError(f"the tokenizer has {size:,} ids but the word table only {rows:,} rows")
    named = _config_ids(loaded.model)
    if any(i >= size for i in named.values()):
        bad = next(f"{k}={i}" for k, i in named.items() if i >= size)
        raise ModelError(f"config {bad} is not an id of the tokenizer ({size:,} ids)")
    counts = token_counts(loaded.tokenizer, texts, size)
    required = vocab.close(vocab.special_ids() | vocab.spelling_ids() | set(named.values()))
    kept = _choose(vocab, counts, required, config)
    remap = np.full(rows, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    tokenizer, files = _rebuild_tokenizer(loaded.tokenizer, vocab.rewrite(kept), folder)
    model, tables = _slice_model(loaded.model, torch.as_tensor(kept), rows, remap, named)
    return Trimmed(LoadedModel(model.eval(), tokenizer), kept, remap, rows, hidden, tables, files)


def _choose(vocab: TokenizerVocab, counts: np.ndarray, required: set[int],
            config: TrimVocabConfig) -> np.ndarray:
    """The kept ids: the required ones, then domain tokens by frequency while they fit."""
    if config.max_vocab is not None and len(required) > config.max_vocab:
        raise RecipeError(f"prepare trim-vocab: max_vocab {config.max_vocab:,} is below the "
                          f"{len(required):,} rows that must stay (special tokens and single "
                          "characters); raise it or leave it out")
    kept = set(required)
    order = np.argsort(-counts, kind="stable")
    for i in order[: int((counts >= config.min_count).sum())]:
        if int(i) in kept:
            continue
        extra = vocab.close({int(i)}) - kept
        if config.max_vocab is not None and len(kept) + len(extra) > config.max_vocab:
            continue  # a rarer token with fewer new parts may still fit
        kept |= extra
    return np.asarray(sorted(kept), dtype=np.int64)


def check_ids(old: Any, new: Any, remap: np.ndarray, texts: Sequence[str]) -> IdCheck:
    """Hold the contract on ``texts``: exact rows get ``remap(old ids)``, others decode to
    the same text with no unknown token the old tokenizer did not emit."""
    old_b, new_b = _plain_backend(old), _plain_backend(new)
    old_unk, new_unk = _unk_id(old), _unk_id(new)
    exact = respelled = 0
    failures: list[tuple[int, str]] = []
    for start in range(0, len(texts), 4096):
        batch = list(texts[start:start + 4096])
        pairs = zip(old_b.encode_batch(batch), new_b.encode_batch(batch), strict=True)
        for row, (o, n) in enumerate(pairs, start):
            old_ids, new_ids = np.asarray(o.ids, dtype=np.int64), np.asarray(n.ids, dtype=np.int64)
            mapped = remap[old_ids]
            if (mapped >= 0).all():
                if np.array_equal(mapped, new_ids):
                    exact += 1
                else:
                    failures.append((row, "ids differ though every token was kept"))
                continue
            had_unk = old_unk is not None and bool((old_ids == old_unk).any())
            if new_unk is not None and (new_ids == new_unk).sum() > (old_ids == old_unk).sum():
                failures.append((row, "a dropped piece became the unknown token"))
            elif not had_unk and old_b.decode(o.ids) != new_b.decode(n.ids):
                failures.append((row, "decodes to different text"))
            else:
                respelled += 1
    return IdCheck(len(texts), exact, respelled, tuple(failures))


def _plain_backend(tokenizer: Any) -> Any:
    """A copy of the tokenizer's backend that neither truncates nor pads."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _unk_id(tokenizer: Any) -> int | None:
    unk = getattr(tokenizer, "unk_token_id", None)
    return int(unk) if isinstance(unk, int) else None


def _rebuild_tokenizer(old: Any, data: dict[str, Any], folder: Path) -> tuple[Any, dict[str, Path]]:
    """The old tokenizer's saved files with the new vocabulary, loaded back (so what the
    later stages use is what the bundle ships); and the plain vocabulary files."""
    from transformers import AutoTokenizer

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    old.save_pretrained(str(folder))
    for name in _VOCAB_FILES:
        (folder / name).unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    files = {}
    for name, text in legacy_files(data).items():
        files[name] = folder / name
        files[name].write_text(text, encoding="utf-8")
    return tokenizer, files


def _config_ids(model: Any) -> dict[str, int]:
    """Token ids the model's config (and generation config) names, by ``where.name[i]``."""
    out: dict[str, int] = {}
    for where, cfg in _token_configs(model):
        for key, value in vars(cfg).items():
            if not key.endswith("_token_id") or value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            out |= {f"{where}.{key}[{j}]": int(v) for j, v in enumerate(values) if v is not None}
    return out


def _token_configs(model: Any) -> list[tuple[str, Any]]:
    configs = [("config", model.config)]
    text = model.config.get_text_config()
    if text is not model.config:
        configs.append(("text_config", text))
    if getattr(model, "generation_config", None) is not None:
        configs.append(("generation_config", model.generation_config))
    return configs


def _slice_model(model: Any, kept: Any, rows: int, remap: np.ndarray,
                 named: dict[str, int]) -> tuple[Any, int]:
    """A copy with every vocabulary-sized table sliced to ``kept`` (ties kept tied), its
    config's vocab size and token ids renumbered; and how many tables it had."""
    import torch

    student = copy.deepcopy(model)
    inp, out = student.get_input_embeddings(), student.get_output_embeddings()
    targets = {id(inp.weight)}
    if out is not None:
        targets |= {id(out.weight)} | ({id(out.bias)} if getattr(out, "bias", None) is not None else set())
    for name, param in student.named_parameters(remove_duplicate=False):
        # An LM head's bias may live beside the head (BERT's cls.predictions.bias).
        if param.dim() == 1 and param.shape[0] == rows and name.endswith("bias"):
            targets.add(id(param))
    sliced: dict[int, torch.nn.Parameter] = {}
    for module in student.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and id(param) in targets:
                if id(param) not in sliced:
                    sliced[id(param)] = torch.nn.Parameter(param.data[kept].clone(),
                                                           requires_grad=param.requires_grad)
                module._parameters[name] = sliced[id(param)]
    n = len(kept)
    inp.num_embeddings = n
    if out is not None and hasattr(out, "out_features"):
        out.out_features = n
    pad = named.get("config.pad_token_id[0]")
    if inp.padding_idx is not None:
        inp.padding_idx = int(remap[inp.padding_idx]) if remap[inp.padding_idx] >= 0 else None
    for module in student.modules():
        # RoBERTa-style embeddings compare input ids with the pad id to number positions.
        if module is not inp and not isinstance(module, torch.nn.Embedding) \
                and getattr(module, "padding_idx", None) == pad and pad is not None:
            module.padding_idx = int(remap[pad])
    student.config.get_text_config().vocab_size = n
    if student.config.get_text_config() is not student.config and hasattr(student.config, "vocab_size"):
        student.config.vocab_size = n
    for _where, cfg in _token_configs(student):
        for key, value in list(vars(cfg).items()):
            if key.endswith("_token_id") and value is not None:
                setattr(cfg, key, [int(remap[v]) for v in value] if isinstance(value, (list, tuple))
                        else int(remap[value]))
    untied = out is not None and out.weight is not inp.weight
    return student, 2 if untied else 1


@register_prepare(TrimVocabConfig)
def trim_vocab(model: LoadedModel, config: TrimVocabConfig, workdir: Path, ctx: Any) -> LoadedModel:
    domain = list(read_train_text(ctx.request.train_data, "trim-vocab").texts)
    for extra in config.extra_text:
        domain += read_train_text(Path(extra), "trim-vocab").texts
    evaluated = _eval_texts(ctx)
    texts = domain + evaluated if config.include_eval else domain
    trimmed = trim_vocabulary(model, texts, config, workdir / "trim-vocab")
    ctx.record.notes |= trimmed.notes()
    checks = {"domain": texts} | ({"eval": evaluated} if evaluated and not config.include_eval else {})
    for name, rows in checks.items():
        check = check_ids(model.tokenizer, trimmed.loaded.tokenizer, trimmed.remap, rows)
        if not check.ok:
            row, why = check.failures[0]
            raise ModelError(f"prepare trim-vocab: the trimmed tokenizer broke the id contract on "
                             f"{len(check.failures):,} of {check.rows:,} {name} rows (row {row}: "
                             f"{why}); this tokenizer cannot be trimmed safely: drop the stage")
        ctx.record.notes[f"{name}_ids"] = check.summary()
    # Beside tokenizer.json, the plain vocabulary files tools without tokenizers read.
    ctx.bundle_files |= trimmed.files
    return trimmed.loaded


def _eval_texts(ctx: Any) -> list[str]:
    """The eval and calibration text the family read (rows for encoders, lines for decoders)."""
    inputs = getattr(ctx.request, "inputs", None)
    texts: list[str] = []
    for name in ("data", "calibration"):
        rows = getattr(getattr(inputs, name, None), "texts", None)
        texts += list(rows or ())
    for name in ("text", "calibration_text"):
        value = getattr(inputs, name, None)
        if isinstance(value, str):
            texts += [line for line in value.splitlines() if line.strip()]
    return list(dict.fromkeys(texts))  # calibration rows are often eval rows: count each once
