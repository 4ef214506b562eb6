"""Eval and calibration text: TSV, CSV or JSONL files with a text column, or the
built-in sentences.

A file's header names the text column (``text`` or ``sentence``) and optionally a
``label`` column holding label ids or label names.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgeopt.errors import DataError

TEXT_COLUMNS = ("text", "sentence")


@dataclass(frozen=True)
class EvalData:
    """Texts and, when the file has them, integer labels."""

    texts: tuple[str, ...]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def sample(self, n: int, seed: int = 0) -> EvalData:
        """A deterministic subset of ``n`` rows (same seed, same rows)."""
        if n >= len(self.texts):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self.texts), size=n, replace=False))
        labels = None if self.labels is None else self.labels[idx]
        return EvalData(tuple(self.texts[i] for i in idx), labels, f"{self.source} (sample of {n})")


def builtin_sentences() -> EvalData:
    """The built-in set: varied English sentences written for edgeopt, one per line."""
    text = resources.files("edgeopt").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    rows = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return EvalData(rows, None, "built-in sentences")


def load_eval_data(path: str | Path, label_names: tuple[str, ...] | None = None,
                   missing_labels: bool = False) -> EvalData:
    """Read a TSV/CSV/JSONL file; one-line errors name the file, the row and the fix.

    ``missing_labels``: an empty label cell is allowed and read as -1 (unlabelled), for
    training text where only some rows carry labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"eval data {path} does not exist; pass a TSV, CSV or JSONL file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            rows = _read_jsonl(path)
        elif suffix in (".tsv", ".csv", ".txt"):
            rows = _read_delimited(path, "," if suffix == ".csv" else "\t")
        else:
            raise DataError(f"{path}: unknown format {suffix!r}; use .tsv, .csv or .jsonl")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    if not rows:
        raise DataError(f"{path} has no data rows; it needs a header and at least one row")
    keys = rows[0][1].keys()
    text_col = next((c for c in TEXT_COLUMNS if c in keys), None)
    if text_col is None:
        raise DataError(f"{path}: no text column; the header must name 'text' or 'sentence' "
                        f"(found: {', '.join(map(str, keys)) or 'nothing'})")
    texts: list[str] = []
    labels: list[int] = []
    has_labels = "label" in keys
    for line_no, row in rows:
        value = row.get(text_col)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}:{line_no}: empty or missing '{text_col}' value")
        texts.append(value.strip())
        if has_labels:
            raw = row.get("label")
            if missing_labels and (raw is None or str(raw).strip() == ""):
                labels.append(-1)
                continue
            labels.append(_parse_label(raw, label_names, f"{path}:{line_no}"))
    return EvalData(tuple(texts), np.asarray(labels, dtype=np.int64) if has_labels else None,
                    str(path))


def _read_delimited(path: Path, delimiter: str) -> list[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t"
                            else csv.QUOTE_MINIMAL)
        header = next(reader, None)
        if header is None:
            return []
        header = [h.strip() for h in header]
        rows = []
        for i, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}:{i}: expected {len(header)} columns "
                                f"({delimiter!r}-separated), found {len(fields)}")
            rows.append((i, dict(zip(header, fields, strict=True))))
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, object]]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{i}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{i}: each line must be a JSON object")
            rows.append((i, obj))
    return rows


def _parse_label(value: object, label_names: tuple[str, ...] | None, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: label must be an integer id or a label name, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    if text.lstrip("-").isdigit():
        return int(text)
    if label_names and text in label_names:
        return label_names.index(text)
    known = f" (known: {', '.join(label_names)})" if label_names else ""
    raise DataError(f"{where}: label {text!r} is neither an integer id nor a label name{known}")
