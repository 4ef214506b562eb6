"""The rows ``edgeopt verify`` feeds every side: the bundle's own eval data (or given
rows), tokenized once with the bundle's tokenizer, and put back in data order after.

Encoders get batches of rows of similar length (cut to a graph's fixed shape when it has
one); a causal LM gets each prompt alone, unpadded, with an empty cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import BundleError, DataError
from edgeopt.evaldata import EvalData, builtin_sentences, load_eval_data
from edgeopt.families import TEXT_GENERATION
from edgeopt.runtime import conform_feeds
from edgeopt.source import SourceModel

BATCH_SIZE = 16
MAX_LENGTH = 128
PROMPT_TOKENS = 32  # a causal LM's prompts are cut here: emulation is ~30x slower


@dataclass(frozen=True)
class Batches:
    """Graph feeds for every run and how their outputs go back into data order."""

    output: str  # the graph output compared
    runs: list[dict[str, np.ndarray]]  # exactly what each session.run gets
    groups: list[tuple[int, int, int]]  # per batch: first run, runs, rows
    torch_feeds: list[dict[str, np.ndarray]]  # per batch, before any fixed-shape cut
    order: np.ndarray  # data row of each batched row
    per_position: bool = False  # causal LM: every position of a prompt is a row

    def assemble(self, outs: list[np.ndarray], torch: bool = False) -> np.ndarray:
        """One array in data order from per-run outputs (per-batch ones with ``torch``)."""
        if not torch:
            outs = [np.concatenate(outs[first:first + n], axis=0)[:rows]
                    for first, n, rows in self.groups]
        if self.per_position:  # [1, T, vocab] per prompt -> [positions, vocab]
            return np.concatenate([o[0] for o in outs], axis=0)
        stacked = np.concatenate(outs, axis=0)
        result = np.empty_like(stacked)
        result[self.order] = stacked
        return result


def eval_data_of(bundle: Path, manifest: dict[str, Any], task: str) -> EvalData:
    """The data the bundle was validated on, as its report names it. A causal LM was
    scored on running text, not rows: its prompts default to the built-in sentences."""
    if task == TEXT_GENERATION:
        return builtin_sentences()
    import json

    try:
        source = json.loads((bundle / "report.json").read_text(encoding="utf-8"))["parity"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{bundle}/report.json does not say which data the bundle was "
                        "validated on; pass --data FILE") from None
    source = re.sub(r" \(sample of \d+\)$", "", str(source))
    if source == builtin_sentences().source:
        return builtin_sentences()
    if not Path(source).is_file():
        raise DataError(f"the bundle was validated on {source}, which is not here; pass "
                        "--data FILE (e.g. ../shared/data/sst2/dev.tsv)")
    return load_eval_data(source, _label_names(manifest))


def _label_names(manifest: dict[str, Any]) -> tuple[str, ...] | None:
    names = manifest.get("label_names")
    return tuple(names) if names else None


def _tokenizer(bundle: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(bundle), local_files_only=True)
    except (OSError, ValueError) as err:
        raise BundleError(f"{bundle} has no loadable tokenizer ({type(err).__name__}); "
                          "recompile the bundle") from None


def encoder_batches(bundle: Path, manifest: dict[str, Any], data: EvalData) -> Batches:
    """Rows of similar length together, tokenized as the compile's validation does."""
    tok = _tokenizer(bundle)
    names = [i["name"] for i in manifest["inputs"]]
    limit = manifest.get("max_sequence_length") or MAX_LENGTH
    fixed = manifest.get("fixed_input_shape")
    order = np.argsort([len(t) for t in data.texts], kind="stable")
    runs: list[dict[str, np.ndarray]] = []
    groups, torch_feeds = [], []
    for start in range(0, len(order), BATCH_SIZE):
        idx = order[start:start + BATCH_SIZE]
        enc = tok([data.texts[i] for i in idx], padding=True, truncation=True,
                  max_length=min(MAX_LENGTH, int(limit)), return_tensors="np")
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
        feeds.setdefault("token_type_ids", np.zeros_like(feeds["input_ids"]))
        feeds = {n: feeds[n] for n in names}
        torch_feeds.append(feeds)
        cut = conform_feeds([feeds], (fixed["batch"], fixed["sequence"])) if fixed else [feeds]
        groups.append((len(runs), len(cut), len(idx)))
        runs += cut
    output = manifest["outputs"][0]["name"]
    return Batches(output, runs, groups, torch_feeds, order)


def decoder_batches(bundle: Path, manifest: dict[str, Any], data: EvalData) -> Batches:
    """One prompt per run: its first ``PROMPT_TOKENS`` tokens and an empty cache."""
    from edgeopt.decoder.io import DecoderIO

    io = DecoderIO.from_dict(manifest["decoder"])
    tok = _tokenizer(bundle)
    runs = []
    for text in data.texts:
        ids = np.asarray([tok(text)["input_ids"][:PROMPT_TOKENS]], dtype=np.int64)
        if ids.shape[1] < 2:
            raise DataError(f"a prompt of {data.source} has under 2 tokens ({text!r}); pass "
                            "rows of text")
        runs.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                     "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
                     **io.empty_past(1)})
    groups = [(i, 1, 1) for i in range(len(runs))]
    return Batches("logits", runs, groups, runs, np.arange(len(runs)), per_position=True)


def source_at_hand(bundle: Path, manifest: dict[str, Any], explicit: str | Path | None
                   ) -> tuple[SourceModel | None, str]:
    """The source model the bundle was compiled from, when it is here with the same
    weights (``explicit`` overrides the path its report names), else None and why."""
    import json

    from edgeopt.errors import ModelError
    from edgeopt.source import inspect_model

    path = explicit
    if path is None:
        try:
            path = json.loads((bundle / "report.json").read_text(encoding="utf-8"))["source"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, "the report names no source model; pass --source MODEL"
    try:
        src = inspect_model(str(path))
    except ModelError as err:
        if explicit is not None:
            raise
        return None, f"the source model is not at hand ({err})"
    want = manifest.get("source_weights_sha256")
    if want and src.weights_sha256() != want:
        if explicit is not None:
            raise ModelError(f"{path} has other weights than the ones {bundle} was compiled from")
        return None, f"{path} now holds other weights than the bundle was compiled from"
    return src, ""

