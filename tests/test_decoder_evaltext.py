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
