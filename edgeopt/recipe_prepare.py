"""The ``prepare:`` section of a recipe: torch-side stages that run between load and
export (layer dropping now; distillation, pruning and vocabulary trimming build here),
one frozen config type per stage, found by its ``stage`` name.

    prepare:
      - stage: keep-layers
        layers: [0, 2, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeopt.recipe import check

# One explicit registry: stage name -> config type. Refuses duplicates.
PREPARE_CONFIGS: dict[str, type] = {}


def register_prepare_config(cls: type) -> type:
    """Add a prepare-stage config type under its ``stage`` name."""
    if cls.stage in PREPARE_CONFIGS:
        raise ValueError(f"prepare stage {cls.stage!r} registered twice")
    PREPARE_CONFIGS[cls.stage] = cls
    return cls


@register_prepare_config
@dataclass(frozen=True)
class KeepLayersConfig:
    """Keep only these transformer layers (0-based, in order): the student a
    distillation starts from, or a cheaper model when the later layers add little."""

    stage: ClassVar[str] = "keep-layers"
    runner: ClassVar[str] = "edgeopt.prepare.keep_layers"  # the module that registers its stage
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check(bool(self.layers), "prepare keep-layers needs layers: [i, j, ...] (0-based)")
        check(all(i >= 0 for i in self.layers), "prepare keep-layers: layer indices must be >= 0")
        check(list(self.layers) == sorted(set(self.layers)),
              "prepare keep-layers: list each layer once, in increasing order")


@register_prepare_config
@dataclass(frozen=True)
class TrimVocabConfig:
    """Keep only the vocabulary rows the domain text (``--train-data``) uses, plus the
    special tokens and every single-character piece, and rewrite the tokenizer to match:
    kept-token text gets the old ids renumbered, any other text is spelled in shorter
    kept pieces (edgeopt.prepare.tokenizer_remap states the contract)."""

    stage: ClassVar[str] = "trim-vocab"
    runner: ClassVar[str] = "edgeopt.prepare.trim_vocab"
    # A token the domain text uses fewer times than this is dropped (spelled in parts).
    min_count: int = 1
    # Also keep the tokens of the eval and calibration text, so those rows stay exact.
    include_eval: bool = False
    # More domain text: files read like --train-data (TSV/CSV/JSONL text column, or TXT).
    extra_text: tuple[str, ...] = ()
    # At most this many rows: the least frequent domain tokens go first (None: no cap).
    max_vocab: int | None = None

    def __post_init__(self) -> None:
        check(self.min_count >= 1, "prepare trim-vocab: min_count must be >= 1")
        check(self.max_vocab is None or self.max_vocab >= 1,
              "prepare trim-vocab: max_vocab must be >= 1 (or left out for no cap)")
