"""What a compile is asked to do, checked before any heavy work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.recipe import AccuracyBudget, Recipe
from edgeopt.source import SourceModel


@dataclass(frozen=True)
class CompileRequest:
    """Everything a compile needs, already checked by :mod:`edgeopt.api` and the family."""

    src: SourceModel
    recipe: Recipe
    target: str
    # The family's own view of the eval and calibration data (rows for encoders, plain
    # text for decoders), read and checked by its ``read_inputs``.
    inputs: Any
    out: Path
    force: bool
    fail_on_parity: bool
    trust_remote_code: bool = False
    # Keep the most sensitive layers in higher precision until this holds (None: no search).
    budget: AccuracyBudget | None = None
    # Training text for the prepare stages (distillation, pruning importance, vocabulary
    # trimming): a TSV/CSV/JSONL/TXT file; labels optional. None: the stages that need it
    # refuse to run, naming --train-data.
    train_data: Path | None = None


@dataclass(frozen=True)
class InputRequest:
    """The data arguments of a compile, as the user gave them, for a family to read."""

    src: SourceModel
    eval_data: Any  # a path, an EvalData, or None
    calibration_data: Any
    max_eval_rows: int | None = None
    # Decoders: how much text to score (edgeopt.decoder.validate.DecoderEvalConfig).
    decoder_eval: Any = None
    budget: AccuracyBudget | None = None


def reject_decoder_eval(req: InputRequest) -> None:
    """Families without token-level eval settings refuse them in one line."""
    from edgeopt.errors import UsageError

    if req.decoder_eval is not None:
        raise UsageError(f"decoder eval settings (--max-eval-tokens) apply to text-generation "
                         f"models, not {req.src.task}; use --max-eval-rows")


def optional_path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, (str, Path)) else None
