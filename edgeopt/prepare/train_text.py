"""The training text the prepare stages read (``--train-data``): distillation trains on
it, pruning ranks importance on it, vocabulary trimming keeps the tokens it uses.

A TSV/CSV/JSONL file with a ``text``/``sentence`` column and an optional ``label``
column (an empty label cell means unlabelled: the teacher labels that row), or a
``.txt`` file with one text per line (all unlabelled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.errors import DataError, RecipeError
from edgeopt.evaldata import EvalData, load_eval_data

UNLABELLED = -1


def read_train_text(path: Path | None, stage: str, max_rows: int | None = None,
                    seed: int = 0) -> EvalData:
    """The rows of ``path`` (a deterministic sample of ``max_rows`` when set); labels are
    -1 where a row has none. ``stage`` names the stage in the error for a missing file."""
    if path is None:
        raise RecipeError(f"prepare {stage} needs training text: pass --train-data FILE "
                          f"(TSV/CSV/JSONL with a text column, or TXT, one text per line)")
    plain = path.suffix.lower() == ".txt"
    data = _read_lines(path) if plain else load_eval_data(path, missing_labels=True)
    return data.sample(max_rows, seed) if max_rows is not None else data


def _read_lines(path: Path) -> EvalData:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    texts = tuple(line.strip() for line in lines if line.strip())
    if not texts:
        raise DataError(f"{path} has no text; it needs one text per line")
    return EvalData(texts, None, str(path))


def labelled_mask(data: EvalData) -> np.ndarray:
    """True where a row carries its own label."""
    if data.labels is None:
        return np.zeros(len(data), dtype=bool)
    return data.labels != UNLABELLED
