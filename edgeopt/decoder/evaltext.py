"""Plain text turned into what decoder parity and calibration need: a token stream cut
into fixed windows, and short prompts taken from the text itself.

One eval text serves three readers, in this order and never overlapping: the validate
stage scores its first ``parity_tokens`` tokens (windows, and prompts from the lines
those tokens cover); quantizers calibrate on the ``calibration_tokens`` after them; what
follows is held out (:func:`split_text`): no compile reads it, so a benchmark can check
the gates on text neither they nor the recipe's tuning saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.decoder.io import DecoderIO
from edgeopt.errors import DataError

# No real tokenizer produces more tokens than characters; 20x leaves ample slack for
# reading only the head of a large file.
_CHARS_PER_TOKEN_BOUND = 20


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text; one-line errors say what to pass instead."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"eval text {path} does not exist; pass a plain-text file") from None
    except UnicodeDecodeError:
        raise DataError(f"eval text {path} is not UTF-8 text; pass a plain-text file") from None
    if not text.strip():
        raise DataError(f"eval text {path} is empty; pass a file with some prose")
    return text


def token_windows(tokenizer: Any, text: str, max_tokens: int, window: int) -> np.ndarray:
    """The first ``max_tokens`` tokens of ``text`` as non-overlapping rows [n, window].

    No special tokens are added (the stream is one document); a text shorter than one
    window gives one shorter row.
    """
    ids = text_tokens(tokenizer, text, max_tokens)
    if len(ids) < 2:
        raise DataError("the eval text has fewer than 2 tokens; pass a longer text")
    window = min(window, len(ids))
    rows = len(ids) // window
    return np.asarray(ids[: rows * window], dtype=np.int64).reshape(rows, window)


def prompts_from_text(text: str, count: int, max_words: int = 12) -> list[str]:
    """``count`` prompts spread evenly over the text: the opening words of its paragraphs.

    A paragraph is a non-empty line that is not a ``= heading =`` and has at least 6
    words; a prompt is its first half, at most ``max_words`` words.
    """
    lines = [line.strip() for line in text.splitlines()]
    paragraphs = [line for line in lines if len(line.split()) >= 6 and not line.startswith("=")]
    if not paragraphs:
        raise DataError("the eval text has no line of 6 or more words to take prompts from")
    picks = np.linspace(0, len(paragraphs) - 1, num=min(count, len(paragraphs))).round().astype(int)
    prompts = []
    for i in picks:
        words = paragraphs[i].split()
        prompts.append(" ".join(words[: min(max_words, max(3, len(words) // 2))]))
    return prompts


def calibration_feeds(tokenizer: Any, io: DecoderIO, text: str, count: int, seq_len: int,
                      skip_tokens: int = 0) -> list[dict[str, np.ndarray]]:
    """Up to ``count`` prefill feeds of ``seq_len`` tokens (empty past) for calibrating
    quantizers; fewer (or shorter, when the text is shorter than one) for a short text.

    ``skip_tokens`` starts after the tokens parity scores, so calibration never sees them.
    """
    ids = text_tokens(tokenizer, text, skip_tokens + count * seq_len)[skip_tokens:]
    if len(ids) < 2:
        raise DataError(f"the calibration text has fewer than 2 tokens after skipping "
                        f"{skip_tokens}; pass a longer text")
    seq_len = min(seq_len, len(ids))
    rows = min(count, len(ids) // seq_len)
    feeds = []
    for row in np.asarray(ids[: rows * seq_len], dtype=np.int64).reshape(rows, seq_len):
        feeds.append({"input_ids": row[None], "attention_mask": np.ones_like(row[None]),
                      "position_ids": np.arange(seq_len, dtype=np.int64)[None], **io.empty_past(1)})
    return feeds


def text_tokens(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """The first ``max_tokens`` tokens of ``text`` as one document (no special tokens)."""
    head = text[: max_tokens * _CHARS_PER_TOKEN_BOUND]
    return list(tokenizer(head, add_special_tokens=False)["input_ids"][:max_tokens])


@dataclass(frozen=True)
class TextSplit:
    """An eval text cut at line boundaries around its parity and calibration tokens.

    ``parity`` is the lines inside the first ``parity_tokens`` tokens (where prompts come
    from); ``heldout`` starts at the first line after the calibration tokens end.
    """

    parity: str
    heldout: str
    heldout_start: int  # character offset of ``heldout`` in the text


def split_text(tokenizer: Any, text: str, parity_tokens: int, calibration_tokens: int) -> TextSplit:
    """Where the parity lines end and the held-out lines start (see the module docstring).

    A text too short for all three parts gives the whole text as ``parity`` and an empty
    ``heldout``, as the validate stage then scores it all.
    """
    parity = parity_text(tokenizer, text, parity_tokens)
    if len(parity) == len(text):
        return TextSplit(text, "", len(text))
    heldout = _first_line_after(tokenizer, text, _line_starts(text), parity_tokens + calibration_tokens)
    return TextSplit(parity, text[heldout:], heldout)


def parity_text(tokenizer: Any, text: str, parity_tokens: int) -> str:
    """The lines inside the first ``parity_tokens`` tokens (the whole text if it is shorter):
    where the validate stage takes its prompts, so they never reach calibration text."""
    end = _last_line_within(tokenizer, text, _line_starts(text), parity_tokens)
    return text if end is None else text[:end]


def _line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]


def _prefix_tokens(tokenizer: Any, text: str, end: int, cap: int) -> int:
    return len(text_tokens(tokenizer, text[:end], cap + 1))


def _last_line_within(tokenizer: Any, text: str, starts: list[int], tokens: int) -> int | None:
    """The largest line start whose prefix has at most ``tokens`` tokens; None when the
    whole text has."""
    if _prefix_tokens(tokenizer, text, len(text), tokens) <= tokens:
        return None
    lo, hi = 0, len(starts) - 1  # invariant: prefix(starts[lo]) <= tokens < prefix(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _prefix_tokens(tokenizer, text, starts[mid], tokens) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return starts[lo]


def _first_line_after(tokenizer: Any, text: str, starts: list[int], tokens: int) -> int:
    """The smallest line start whose prefix has at least ``tokens`` tokens (else the end)."""
    lo, hi = 0, len(starts)  # starts[hi] stands for len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if _prefix_tokens(tokenizer, text, starts[mid], tokens) >= tokens:
            hi = mid
        else:
            lo = mid + 1
    return starts[lo] if lo < len(starts) else len(text)
