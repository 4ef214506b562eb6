"""Plain text for decoder parity and calibration: windows, prompts, calibration feeds."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from edgeopt.decoder.evaltext import calibration_feeds, prompts_from_text, read_text, token_windows
from edgeopt.decoder.io import DecoderIO
from edgeopt.errors import DataError

TEXT = "\n".join([
    " = Heading that is long enough to count if it were prose = ",
    "",
    " Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi . ",
    " short line",
    " One two three four five six seven eight . ",
    " = = Sub heading = = ",
    " Red orange yellow green blue indigo violet black white grey . ",
])


def test_prompts_come_from_paragraph_openings_and_skip_headings():
    prompts = prompts_from_text(TEXT, 16)
    assert prompts == ["Alpha beta gamma delta epsilon zeta eta", "One two three four",
                       "Red orange yellow green blue"]
    assert prompts_from_text(TEXT, 2) == [prompts[0], prompts[2]]  # spread over the text
    with pytest.raises(DataError, match="6 or more words"):
        prompts_from_text("= a =\nshort\n", 4)


def test_windows_and_calibration_feeds(tiny_llama_lm, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_llama_lm)
    all_ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    rows = token_windows(tok, TEXT, max_tokens=40, window=16)
    assert rows.shape == (2, 16) and rows.dtype == np.int64
    assert rows.ravel().tolist() == all_ids[:32]
    short = len(tok("a b c", add_special_tokens=False)["input_ids"])
    assert token_windows(tok, "a b c", max_tokens=100, window=16).shape == (1, short)
    io = DecoderIO(num_layers=2, num_kv_heads=2, head_dim=16, vocab_size=len(tok), max_positions=256)
    feeds = calibration_feeds(tok, io, TEXT, count=3, seq_len=8, skip_tokens=4)
    assert len(feeds) == 3
    assert feeds[0]["input_ids"].tolist() == [all_ids[4:12]]
    assert feeds[0]["past_key_values.1.value"].shape == (1, 2, 0, 16)
    assert set(feeds[0]) == set(io.input_names)
    path = tmp_path / "empty.txt"
    path.write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_text(path)


def _numbered_paragraphs(count: int) -> str:
    # Every paragraph unique, so a prompt names the one line it came from.
    lines = [" = Title = ", ""]
    for i in range(count):
        lines += [f" Paragraph {i} tells of river {i} and the town {i} beside it today .", ""]
    return "\n".join(lines)


def test_validation_prompts_windows_calibration_and_heldout_never_overlap(tiny_llama_lm):
    from edgeopt.decoder.evaltext import split_text, text_tokens

    tok = AutoTokenizer.from_pretrained(tiny_llama_lm)
    text = _numbered_paragraphs(60)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    parity_tokens, calibration_tokens = 200, 150
    assert len(ids) > parity_tokens + calibration_tokens + 100  # all three parts are non-empty
    split = split_text(tok, text, parity_tokens, calibration_tokens)
    io = DecoderIO(num_layers=2, num_kv_heads=2, head_dim=16, vocab_size=len(tok), max_positions=256)
    feeds = calibration_feeds(tok, io, text, count=3, seq_len=50, skip_tokens=parity_tokens)
    calibrated = [t for f in feeds for t in f["input_ids"][0].tolist()]
    assert calibrated == ids[parity_tokens:parity_tokens + calibration_tokens]
    # The prompts come from lines wholly inside the scored tokens ...
    assert text.startswith(split.parity) and split.parity.endswith("\n")
    assert len(text_tokens(tok, split.parity, 10**6)) <= parity_tokens
    prompts = prompts_from_text(split.parity, 16)
    assert prompts and all(p in split.parity for p in prompts)
    # ... the held-out lines start after the last calibration token ...
    assert text[split.heldout_start:] == split.heldout and text[split.heldout_start - 1] == "\n"
    assert len(text_tokens(tok, text[:split.heldout_start], 10**6)) >= parity_tokens + calibration_tokens
    # ... and no paragraph of one part is read by another.
    def paragraphs(part: str) -> set[str]:
        return {line.split(" tells")[0].strip() for line in part.splitlines() if "tells" in line}
    held, scored = paragraphs(split.heldout), paragraphs(split.parity)
    prompted = {p.split(" tells")[0] for p in prompts}
    calibration_text = tok.decode(calibrated)
    assert held and scored and prompted <= scored and not held & scored
    assert not any(f"{p} tells" in calibration_text for p in held | prompted)


def test_a_short_text_is_all_parity(tiny_llama_lm):
    from edgeopt.decoder.evaltext import split_text

    tok = AutoTokenizer.from_pretrained(tiny_llama_lm)
    split = split_text(tok, TEXT, parity_tokens=10**4, calibration_tokens=10)
    assert split.parity == TEXT and split.heldout == ""
