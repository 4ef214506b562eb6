"""Vocabulary trimming benchmark (issue 17, item 3): rows kept, bytes saved, the tokenizer
id contract over every row, and what respelling costs in accuracy.

    python benchmarks/bench_trim_vocab.py [--compile] [--out benchmarks/results/trim-vocab.json]

- minilm-sst2 (../shared) trimmed to all 67,349 rows of SST-2 train.tsv: rows kept of
  30,522; MB saved at fp32 and INT8 (rows x hidden x bytes); id equality over every train
  row and every dev row (dev words absent from train are respelled in shorter pieces:
  counted); SST-2 dev accuracy of the trimmed fp32 model vs the untrimmed one (batch 64,
  max length 128, PyTorch eager) and their label agreement. Then the same with train +
  dev as the domain text (dev exact). With ``--compile``, both models compiled for
  arm64-int8 (dev as eval data) and the measured model.onnx sizes.
- all-MiniLM-L6-v2 (``edgeopt fetch minilm``), the same domain text: rows kept and the
  cosine between trimmed and untrimmed mean-pooled embeddings over the dev rows.
- SmolLM2-135M's byte-level BPE tokenizer (``edgeopt fetch smollm2``) on WikiText-2 test
  (every non-empty line): rows kept of 49,152, MB saved (tied table), id equality.

Every number is measured here, on real weights and data; prints JSON and writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLASSIFIER = SHARED / "models" / "minilm-sst2"
TRAIN = SHARED / "data" / "sst2" / "train.tsv"
DEV = SHARED / "data" / "sst2" / "dev.tsv"
WIKI = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"
BATCH, MAX_LENGTH = 64, 128
sys.path.insert(0, str(REPO))  # this checkout's edgeopt


def _trim(loaded, texts, folder: Path) -> tuple[object, float]:
    from edgeopt.prepare.trim_vocab import trim_vocabulary
    from edgeopt.recipe_prepare import TrimVocabConfig

    start = time.perf_counter()
    trimmed = trim_vocabulary(loaded, texts, TrimVocabConfig(), folder)
    return trimmed, time.perf_counter() - start


def _check(loaded, trimmed, texts) -> dict:
    from edgeopt.prepare.trim_vocab import check_ids

    check = check_ids(loaded.tokenizer, trimmed.loaded.tokenizer, trimmed.remap, texts)
    return {"rows": check.rows, "exact": check.exact, "respelled": check.respelled,
            "failures": len(check.failures)}


def _size(trimmed) -> dict:
    saved = trimmed.parameters_saved()
    return {"rows_before": trimmed.rows_before, "rows_after": trimmed.rows_after,
            "rows_kept_pct": round(100 * trimmed.rows_after / trimmed.rows_before, 2),
            "parameters_saved": saved, "mb_saved_fp32": round(saved * 4 / 1e6, 2),
            "mb_saved_int8": round(saved / 1e6, 2)}


def _forward(loaded, texts: list[str], pool: bool = False):
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = loaded.tokenizer(texts[i:i + BATCH], padding=True, truncation=True,
                                   max_length=MAX_LENGTH, return_tensors="pt")
            out = loaded.model(**enc)
            if pool:  # sentence-transformers mean pooling, then L2 normalisation
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vec = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
                outs.append(torch.nn.functional.normalize(vec, dim=-1))
            else:
                outs.append(out.logits.argmax(-1))
    return torch.cat(outs)


def classifier(compile_too: bool) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeopt.artifact import LoadedModel
    from edgeopt.prepare.train_text import read_train_text

    train, dev = read_train_text(TRAIN, "bench"), read_train_text(DEV, "bench")
    loaded = LoadedModel(AutoModelForSequenceClassification.from_pretrained(CLASSIFIER).eval(),
                         AutoTokenizer.from_pretrained(CLASSIFIER))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        trimmed, seconds = _trim(loaded, train.texts, Path(tmp) / "a")
        out["train_only"] = _size(trimmed) | {"trim_seconds": round(seconds, 1),
                                              "train_ids": _check(loaded, trimmed, train.texts),
                                              "dev_ids": _check(loaded, trimmed, dev.texts)}
        labels = dev.labels.tolist()
        before = _forward(loaded, list(dev.texts)).tolist()
        after = _forward(trimmed.loaded, list(dev.texts)).tolist()
        out["train_only"] |= {
            "dev_accuracy_untrimmed": sum(p == y for p, y in zip(before, labels, strict=True)) / len(labels),
            "dev_accuracy_trimmed": sum(p == y for p, y in zip(after, labels, strict=True)) / len(labels),
            "dev_label_agreement": sum(a == b for a, b in zip(before, after, strict=True)) / len(labels)}
        # General English beside the domain text: fewer dev words respelled.
        wiki = [line for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()]
        wide, seconds = _trim(loaded, train.texts + tuple(wiki), Path(tmp) / "c")
        after = _forward(wide.loaded, list(dev.texts)).tolist()
        out["train_and_wikitext2"] = _size(wide) | {
            "dev_ids": _check(loaded, wide, dev.texts),
            "dev_accuracy_trimmed": sum(p == y for p, y in zip(after, labels, strict=True)) / len(labels),
            "dev_label_agreement": sum(a == b for a, b in zip(before, after, strict=True)) / len(labels)}
        both, seconds = _trim(loaded, train.texts + dev.texts, Path(tmp) / "b")
        out["train_and_dev"] = _size(both) | {"trim_seconds": round(seconds, 1),
                                              "train_ids": _check(loaded, both, train.texts),
                                              "dev_ids": _check(loaded, both, dev.texts)}
        if compile_too:
            out["arm64_int8"] = _compiled_sizes(Path(tmp))
    return out


def _compiled_sizes(tmp: Path) -> dict:
    """model.onnx of arm64-int8 bundles, untrimmed and trimmed to train.tsv (dev as eval)."""
    import dataclasses

    import edgeopt
    from edgeopt.recipe import BenchConfig
    from edgeopt.recipe_prepare import TrimVocabConfig
    from edgeopt.targets import load_target

    # Sizes and accuracy only: a short latency run, no PyTorch baseline.
    recipe = dataclasses.replace(load_target("arm64-int8"),
                                 bench=BenchConfig(warmup=1, repeats=3, torch_baseline=False))
    out = {}
    for name, prepare in (("untrimmed", ()), ("trimmed", (TrimVocabConfig(),))):
        bundle = tmp / f"bundle-{name}"
        start = time.perf_counter()
        report = edgeopt.compile(str(CLASSIFIER), out=bundle, eval_data=str(DEV), train_data=str(TRAIN),
                                 recipe=dataclasses.replace(recipe, prepare=prepare))
        out[name] = {"model_mb": round((bundle / "model.onnx").stat().st_size / 1e6, 2),
                     "passed": report.passed, "accuracy": report.parity["metrics"].get("accuracy"),
                     "label_agreement": report.parity["metrics"].get("label_agreement"),
                     "compile_seconds": round(time.perf_counter() - start, 1)}
    return out


def embedder() -> dict:
    from transformers import AutoModel, AutoTokenizer

    from edgeopt import zoo
    from edgeopt.artifact import LoadedModel
    from edgeopt.prepare.train_text import read_train_text

    if not zoo.is_installed("minilm"):
        return {"skipped": "run `edgeopt fetch minilm` first"}
    path = zoo.resolve_demo("minilm")
    train, dev = read_train_text(TRAIN, "bench"), read_train_text(DEV, "bench")
    loaded = LoadedModel(AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    with tempfile.TemporaryDirectory() as tmp:
        trimmed, seconds = _trim(loaded, train.texts, Path(tmp))
        cos = (_forward(loaded, list(dev.texts), pool=True)
               * _forward(trimmed.loaded, list(dev.texts), pool=True)).sum(-1)
        exact = _check(loaded, trimmed, dev.texts)
        kept = _all_kept(loaded, trimmed, dev.texts)
    return _size(trimmed) | {"trim_seconds": round(seconds, 1), "dev_ids": exact,
                             "dev_cosine_exact_rows_min": round(float(cos[kept].min()), 6),
                             "dev_cosine_respelled_rows_min": round(float(cos[~kept].min()), 4),
                             "dev_cosine_respelled_rows_mean": round(float(cos[~kept].mean()), 4),
                             "dev_cosine_mean": round(float(cos.mean()), 4)}


def _all_kept(loaded, trimmed, texts):
    """Per row: True when every old token of the row was kept (the exact rows)."""
    import torch

    rows = loaded.tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    return torch.as_tensor([bool((trimmed.remap[ids] >= 0).all()) for ids in rows])


def decoder_tokenizer() -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    from edgeopt import zoo
    from edgeopt.prepare.tokenizer_remap import TokenizerVocab
    from edgeopt.prepare.trim_vocab import _choose, _rebuild_tokenizer, check_ids, token_counts
    from edgeopt.recipe_prepare import TrimVocabConfig

    if not zoo.is_installed("smollm2"):
        return {"skipped": "run `edgeopt fetch smollm2` first"}
    path = zoo.resolve_demo("smollm2")
    config = json.loads((path / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(path)
    lines = [line for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()]
    vocab = TokenizerVocab.of(tok)
    # The tokenizer side only (the 135M model is not loaded): the same kept set the stage
    # chooses, and the id check over every line.
    counts = token_counts(tok, lines, vocab.size())
    required = vocab.close(vocab.special_ids() | vocab.spelling_ids())
    kept = _choose(vocab, counts, required, TrimVocabConfig())
    with tempfile.TemporaryDirectory() as tmp:
        new, _files = _rebuild_tokenizer(tok, vocab.rewrite(kept), Path(tmp))
        remap = np.full(vocab.size(), -1)
        remap[kept] = np.arange(len(kept))
        check = check_ids(tok, new, remap, lines)
    rows, hidden = int(config["vocab_size"]), int(config["hidden_size"])
    saved = (rows - len(kept)) * hidden  # tied embeddings: one table
    return {"rows_before": rows, "rows_after": len(kept), "used_by_text": int((counts > 0).sum()),
            "rows_kept_pct": round(100 * len(kept) / rows, 2), "mb_saved_fp32": round(saved * 4 / 1e6, 2),
            "mb_saved_int8": round(saved / 1e6, 2), "lines": check.rows, "exact": check.exact,
            "failures": len(check.failures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compile", action="store_true", help="also compile arm64-int8 bundles")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "trim-vocab.json")
    args = ap.parse_args()
    if not CLASSIFIER.exists() or not TRAIN.exists():
        sys.exit(f"needs {CLASSIFIER} and {TRAIN} (../shared)")
    import torch

    torch.set_num_threads(2)
    result = {"classifier": classifier(args.compile), "embedder": embedder(),
              "smollm2_tokenizer": decoder_tokenizer()}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
