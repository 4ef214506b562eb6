"""The ``prepare:`` section of a recipe: torch-side stages that run between load and
export (layer dropping now; distillation, pruning and vocabulary trimming build here),
one frozen config type per stage, found by its ``stage`` name.

    prepare:
      - stage: keep-layers
        layers: [0, 2, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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
PRUNE_SCORES = ("taylor", "random")


def _fraction(value: float, where: str) -> None:
    check(0.0 <= value < 1.0, f"prepare prune: {where} is the fraction to remove, in [0, 1); "
                              f"got {value:g}")


@register_prepare_config
@dataclass(frozen=True)
class PruneConfig:
    """Structured pruning: remove the least important attention heads and feed-forward
    neurons (encoders), or feed-forward neurons and whole layers (decoders), physically.

    Targets are fractions to remove: ``heads``/``ffn`` the same in every layer, or
    ``heads_per_layer``/``ffn_per_layer`` one per layer; ``drop_layers`` is how many
    decoder layers to drop. ``score: random`` ranks at random (a baseline for the score).
    Importance is measured on ``--train-data`` (else the compile's calibration rows)."""

    stage: ClassVar[str] = "prune"
    runner: ClassVar[str] = "edgeopt.prepare.prune"
    heads: float | None = None
    ffn: float | None = None
    heads_per_layer: tuple[float, ...] | None = None
    ffn_per_layer: tuple[float, ...] | None = None
    drop_layers: int = 0
    score: str = "taylor"
    max_rows: int = 256  # rows (encoders) or sequences (decoders) the scores see
    seq_len: int = 128
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.heads is None or self.heads_per_layer is None,
              "prepare prune: give heads (uniform) or heads_per_layer, not both")
        check(self.ffn is None or self.ffn_per_layer is None,
              "prepare prune: give ffn (uniform) or ffn_per_layer, not both")
        for name in ("heads", "ffn"):
            if getattr(self, name) is not None:
                _fraction(getattr(self, name), name)
            for i, value in enumerate(getattr(self, f"{name}_per_layer") or ()):
                _fraction(value, f"{name}_per_layer[{i}]")
        check(self.drop_layers >= 0, "prepare prune: drop_layers must be >= 0")
        check(any((self.heads, self.ffn, self.heads_per_layer, self.ffn_per_layer, self.drop_layers)),
              "prepare prune needs a target: heads, ffn, heads_per_layer, ffn_per_layer or drop_layers")
        check(self.score in PRUNE_SCORES,
              f"prepare prune: score must be one of {', '.join(PRUNE_SCORES)}, not {self.score!r}")
        check(self.max_rows > 0 and self.seq_len > 1 and self.batch_size > 0,
              "prepare prune: max_rows, seq_len and batch_size must be positive")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_TEACHERS = ("loaded", "distilled")


@register_prepare_config
@dataclass(frozen=True)
class DistillConfig:
    """Train a student initialised from the model (some of its layers, optionally a
    narrower feed-forward) on the teacher's outputs over the --train-data text: KL on
    temperature-scaled logits, cross-entropy where a row has a label, optionally MSE on
    hidden states. The teacher is the model as loaded, before any prepare stage, or with
    ``teacher: distilled`` the student an earlier distill stage trained."""

    stage: ClassVar[str] = "distill"
    runner: ClassVar[str] = "edgeopt.prepare.distill"
    layers: Any = "all"  # [i, j, ...] (0-based, increasing), "all", or "every-other"
    ffn_width: int | None = None  # feed-forward neurons kept per layer (None: all)
    temperature: float = 2.0
    kl_weight: float = 1.0  # teacher term (embedders: 1 - cosine + MSE of the pooled vectors)
    ce_weight: float = 1.0  # label term, on rows that carry a label (LMs: the next token)
    hidden_weight: float = 0.0  # MSE of hidden states (0: off; needs the teacher live)
    hidden_map: tuple[int, ...] | None = None  # teacher layer per student layer
    max_steps: int | None = None  # optimizer steps (None: from epochs)
    max_minutes: float | None = None  # training wall time, summed over resumed runs
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup: float = 0.06  # fraction of the steps
    max_length: int = 128  # tokens per row
    max_rows: int | None = None  # a deterministic sample of the training text
    seed: int = 0
    save_steps: int = 200  # checkpoint every this many steps (resume after a kill)
    checkpoint_dir: str | None = None  # None: <output>.distill beside the bundle
    cache_teacher: bool = True  # teacher outputs computed once per row, not per step
    precision: str = "auto"  # auto: bf16 (else fp16) on a GPU, fp32 on CPU
    logging_steps: int = 50
    # "loaded": the model as loaded; "distilled": the last distill stage's student (after
    # pruning or trimming, a recovery learns faster from a better, smaller teacher).
    teacher: str = "loaded"

    def __post_init__(self) -> None:
        name = f"prepare {self.stage}"
        layers = self.layers
        if isinstance(layers, (list, tuple)):
            check(bool(layers) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                       for i in layers),
                  f"{name}: layers must be 0-based layer indices, 'all' or 'every-other'")
            check(list(layers) == sorted(set(layers)),
                  f"{name}: list each layer once, in increasing order")
            object.__setattr__(self, "layers", tuple(layers))
        else:
            check(layers in ("all", "every-other"),
                  f"{name}: layers must be a list of layer indices, 'all' or 'every-other', "
                  f"not {layers!r}")
        check(self.ffn_width is None or self.ffn_width >= 1, f"{name}: ffn_width must be >= 1")
        check(self.temperature > 0, f"{name}: temperature must be > 0")
        check(min(self.kl_weight, self.ce_weight, self.hidden_weight) >= 0,
              f"{name}: loss weights must be >= 0")
        check(self.kl_weight + self.ce_weight + self.hidden_weight > 0,
              f"{name}: at least one loss weight must be > 0")
        check(self.max_steps is None or self.max_steps >= 1, f"{name}: max_steps must be >= 1")
        check(self.max_minutes is None or self.max_minutes > 0, f"{name}: max_minutes must be > 0")
        check(self.epochs > 0, f"{name}: epochs must be > 0")
        check(self.batch_size >= 1 and self.max_length >= 2,
              f"{name}: batch_size must be >= 1 and max_length >= 2")
        check(self.learning_rate > 0 and 0 <= self.warmup < 1,
              f"{name}: learning_rate must be > 0 and warmup in [0, 1)")
        check(self.max_rows is None or self.max_rows >= 1, f"{name}: max_rows must be >= 1")
        check(self.save_steps >= 1 and self.logging_steps >= 1,
              f"{name}: save_steps and logging_steps must be >= 1")
        check(self.teacher in _TEACHERS,
              f"{name}: teacher must be one of {', '.join(_TEACHERS)}, not {self.teacher!r}")
        check(self.precision in _PRECISIONS,
              f"{name}: precision must be one of {', '.join(_PRECISIONS)}")


@register_prepare_config
@dataclass(frozen=True)
class RecoverConfig(DistillConfig):
    """Recovery: a short distillation of the model as it is now (after pruning or vocabulary
    trimming) against the model as loaded; same options as distill, all layers kept."""

    stage: ClassVar[str] = "recover"
    runner: ClassVar[str] = "edgeopt.prepare.distill"
    max_steps: int | None = 300
