"""Eval data files: formats, labels, and one-line errors for malformed input."""

from __future__ import annotations

import pytest

from edgeopt.errors import DataError
from edgeopt.evaldata import builtin_sentences, load_eval_data


def test_builtin_set_is_large_and_varied():
    data = builtin_sentences()
    assert len(data) >= 64
    assert len(set(data.texts)) == len(data.texts)
    lengths = sorted(len(t.split()) for t in data.texts)
    assert lengths[0] <= 2 and lengths[-1] >= 15  # short and long sentences both present


def test_tsv_csv_jsonl_with_labels(tmp_path):
    (tmp_path / "a.tsv").write_text("sentence\tlabel\ngood film \t1\nbad film\t0\n")
    (tmp_path / "a.csv").write_text('text,label\n"good, really",positive\nbad,negative\n')
    (tmp_path / "a.jsonl").write_text('{"text": "good", "label": 1}\n\n{"text": "bad", "label": 0}\n')
    names = ("negative", "positive")
    for name in ("a.tsv", "a.csv", "a.jsonl"):
        data = load_eval_data(tmp_path / name, names)
        assert len(data) == 2
        assert list(data.labels) == [1, 0]
    assert load_eval_data(tmp_path / "a.csv", names).texts[0] == "good, really"


def test_text_only_file_has_no_labels(tmp_path):
    (tmp_path / "t.tsv").write_text("text\nhello there\n")
    assert load_eval_data(tmp_path / "t.tsv").labels is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.tsv", "review\tlabel\ngood\t1\n", "no text column"),
        ("x.tsv", "sentence\tlabel\ngood\t1\tEXTRA\n", r"x.tsv:2: expected 2 columns"),
        ("x.tsv", "sentence\tlabel\ngood\tmaybe\n", "neither an integer id nor a label name"),
        ("x.jsonl", '{"text": "a"}\n{oops\n', r"x.jsonl:2: not valid JSON"),
        ("x.tsv", "sentence\n", "no data rows"),
        ("x.parquet", "", "unknown format"),
        ("x.tsv", "sentence\tlabel\n\t1\n", "empty or missing"),
    ],
)
def test_malformed_files_fail_with_the_row(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_eval_data(path, ("negative", "positive"))


def test_sample_is_deterministic(tmp_path):
    rows = "\n".join(f"sentence {i}\t{i % 2}" for i in range(100))
    (tmp_path / "d.tsv").write_text("sentence\tlabel\n" + rows + "\n")
    data = load_eval_data(tmp_path / "d.tsv")
    a, b = data.sample(10), data.sample(10)
    assert a.texts == b.texts and len(a) == 10
    assert list(a.labels) == [int(t.split()[1]) % 2 for t in a.texts]
