"""Structured-pruning benchmark (issue 17): is the importance score worth something?

    python benchmarks/bench_prune.py [--part encoder|decoder|both|latency] [--random-seeds 3]
                                     [--out benchmarks/results/prune.json]

(a) Encoder: ``../shared/models/minilm-sst2`` pruned by the ``prune`` stage at 25% and 50%
of the heads *and* FFN neurons of every layer, scored by first-order Taylor on 256
labelled SST-2 train rows (a seeded sample), against random selection at the same sizes
(``--random-seeds`` draws). No recovery training. SST-2 dev accuracy on all 872 rows
(max length 128), parameters, and PyTorch eager p50 latency (batch 1, sequence 128,
2 threads, 3 warm-up + 20 timed runs, round-robin over the variants; median and IQR).

(b) Decoder: SmolLM2-135M (``edgeopt fetch smollm2``) with 25% FFN pruning, dropping 2
layers, and both, Taylor/block influence against random: WikiText-2 test perplexity on
the first ``--eval-tokens`` tokens (windows of 512); importance scored on 16 windows of
256 tokens taken from the text *after* the evaluated part (no overlap).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TEACHER = SHARED / "models" / "minilm-sst2"
TRAIN = SHARED / "data" / "sst2" / "train.tsv"
DEV = SHARED / "data" / "sst2" / "dev.tsv"
WIKI = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"
FRACTIONS = (0.25, 0.5)


def _ctx(train_data=None, text: str | None = None):
    from edgeopt.artifact import PassRecord

    inputs = types.SimpleNamespace(calibration_text=text, calibration_source="wiki.test.raw (tail)",
                                   text=text, source="wiki.test.raw")
    return types.SimpleNamespace(request=types.SimpleNamespace(train_data=train_data),
                                 inputs=inputs, record=PassRecord("prepare:prune", {}))


def accuracy(model, tokenizer, texts: list[str], labels: np.ndarray) -> float:
    import torch

    preds = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i:i + 64], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            preds.append(model(**enc).logits.argmax(-1).numpy())
    return float((np.concatenate(preds) == labels).mean())


def latencies(models: dict[str, object], tokenizer, warmup: int = 3, repeats: int = 20
              ) -> dict[str, dict[str, float]]:
    """p50 and IQR per model, timed round-robin (one run of each in turn) so that load from
    other work on the machine falls on every variant alike."""
    import torch

    from edgeopt.tasks import fixed_length_feeds

    feeds = fixed_length_feeds(tokenizer, "a gripping and funny film", 128, 1,
                               ["input_ids", "attention_mask", "token_type_ids"])
    feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(**feeds)
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    out = {}
    for name, values in times.items():
        q1, med, q3 = np.percentile(values, [25, 50, 75])
        out[name] = {"p50_ms": float(med), "iqr_ms": float(q3 - q1)}
    return out


def encoder_part(seeds: int) -> dict:
    import torch

    from edgeopt.artifact import LoadedModel
    from edgeopt.evaldata import load_eval_data
    from edgeopt.prepare.prune import prune
    from edgeopt.recipe_prepare import PruneConfig
    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    torch.set_num_threads(2)
    src = inspect_model(str(TEACHER))
    base = load_torch(src)
    dev = load_eval_data(DEV, src.label_names)
    texts = list(dev.texts)
    rows = []
    timed: dict[str, object] = {}

    def measure(name: str, loaded: LoadedModel, seconds: float, notes: dict) -> None:
        row = {"variant": name, "dev_accuracy": accuracy(loaded.model, loaded.tokenizer, texts,
                                                         dev.labels),
               "parameters": loaded.parameter_count(), "prune_seconds": seconds, "notes": notes}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "notes"}), flush=True)
        if name == "unpruned" or name.startswith("taylor"):  # random ones have the same shapes
            timed[name] = loaded.model

    measure("unpruned", base, 0.0, {})
    for fraction in FRACTIONS:
        for score, seed in [("taylor", 0), *(("random", s) for s in range(seeds))]:
            cfg = PruneConfig(heads=fraction, ffn=fraction, score=score, seed=seed, max_rows=256)
            ctx = _ctx(train_data=TRAIN)
            start = time.perf_counter()
            pruned = prune(base, cfg, None, ctx)
            measure(f"{score} {fraction:.0%}" + (f" seed {seed}" if score == "random" else ""),
                    pruned, time.perf_counter() - start, ctx.record.notes)
    timings = latencies(timed, base.tokenizer)
    print(json.dumps(timings), flush=True)
    return {"model": str(TEACHER), "dev_rows": len(texts), "rows": rows,
            "latency_batch1_seq128_2threads": timings}


def latency_part() -> dict:
    """Only the timings of (a): the unpruned model and the Taylor-pruned ones."""
    import torch

    from edgeopt.prepare.prune import prune
    from edgeopt.recipe_prepare import PruneConfig
    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    torch.set_num_threads(2)
    base = load_torch(inspect_model(str(TEACHER)))
    models = {"unpruned": base.model}
    for fraction in FRACTIONS:
        cfg = PruneConfig(heads=fraction, ffn=fraction, max_rows=256)
        models[f"taylor {fraction:.0%}"] = prune(base, cfg, None, _ctx(train_data=TRAIN)).model
    timings = latencies(models, base.tokenizer)
    print(json.dumps(timings), flush=True)
    return {"latency_batch1_seq128_2threads": timings}


def perplexity(model, windows: np.ndarray) -> float:
    import torch
    import torch.nn.functional as F

    nll, count = 0.0, 0
    with torch.inference_mode():
        for row in windows:
            ids = torch.from_numpy(row)[None]
            logits = model(input_ids=ids).logits[0, :-1].double()
            nll += float(F.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(row) - 1
    return float(np.exp(nll / count))


def decoder_part(eval_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeopt import zoo
    from edgeopt.artifact import LoadedModel
    from edgeopt.decoder.evaltext import read_text, token_windows
    from edgeopt.prepare.prune import prune
    from edgeopt.recipe_prepare import PruneConfig

    torch.set_num_threads(2)
    folder = zoo.fetch("smollm2")
    start = time.perf_counter()
    base = LoadedModel(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
                       AutoTokenizer.from_pretrained(folder))
    load_s = time.perf_counter() - start
    text = read_text(WIKI)
    windows = token_windows(base.tokenizer, text, eval_tokens, 512)
    # Scoring text: what follows the evaluated tokens (about 4 chars a token, with slack).
    used = len(base.tokenizer.decode(windows.ravel()))
    calibration = text[used + 1000:used + 1000 + 16 * 256 * 6]
    rows = []
    variants = [("unpruned", None),
                ("taylor ffn 25%", PruneConfig(ffn=0.25, seq_len=256, max_rows=16, batch_size=4)),
                ("random ffn 25%", PruneConfig(ffn=0.25, score="random", seq_len=256, max_rows=16)),
                ("block influence: drop 2 layers", PruneConfig(drop_layers=2, seq_len=256, max_rows=16,
                                                               batch_size=4)),
                ("random: drop 2 layers", PruneConfig(drop_layers=2, score="random", seq_len=256,
                                                      max_rows=16)),
                ("drop 2 (BI) + taylor ffn 25%", PruneConfig(drop_layers=2, ffn=0.25, seq_len=256,
                                                             max_rows=16, batch_size=4))]
    for name, cfg in variants:
        ctx = _ctx(text=calibration)
        start = time.perf_counter()
        model = base if cfg is None else prune(base, cfg, None, ctx)
        seconds = time.perf_counter() - start
        row = {"variant": name, "perplexity": perplexity(model.model, windows),
               "parameters": model.parameter_count(), "prune_seconds": seconds,
               "notes": ctx.record.notes}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "notes"}), flush=True)
    return {"model": "SmolLM2-135M-Instruct (edgeopt fetch smollm2)", "load_seconds": load_s,
            "eval_tokens": int(windows.size), "window": 512, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("encoder", "decoder", "both", "latency"), default="both")
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "prune.json")
    args = parser.parse_args()
    result: dict = {}
    if args.out.exists():
        result = json.loads(args.out.read_text())
    if args.part in ("encoder", "both"):
        result["encoder"] = encoder_part(args.random_seeds)
    if args.part == "latency":
        result["latency"] = latency_part()
    if args.part in ("decoder", "both"):
        result["decoder"] = decoder_part(args.eval_tokens)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
