"""Where a decoder bundle's memory goes during generation, per target, each in a fresh process.

    python benchmarks/bench_memory.py [--targets arm64-int4-fast,arm64-int4,x86-int8] [--repeats 3]

Runs :mod:`edgeopt.decoder.memprobe` (the probe the compile report's throughput section
uses) on each bundle of the bench-peers cache (``benchmarks/peers/artifacts.py``, compiled
once): the bundle's tokenizer.json loaded with the ``tokenizers`` library, the session
made as the bundle's manifest says, a 128-token prefill of WikiText-2 text and 64 decode
steps with the KV cache, 2 threads. Reports peak RSS (VmHWM) and its parts, the median
of ``--repeats`` fresh processes with the spread, and the median decode step. Each bundle
runs twice, interleaved: with edgeopt's heap settings (``edgeopt/heap.py``: glibc's mmap
threshold fixed, the heap trimmed after each load; what ``edgeopt generate`` does) and
with glibc's defaults. Results: benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402
from bench_peers import EDGEOPT_RECIPES  # noqa: E402
from peers import artifacts  # noqa: E402

PARTS = ("runtime", "tokenizer", "session", "kv_cache", "arena", "final_rss", "load_peak")
HEAPS = {"edgeopt heap": True, "glibc default": False}  # the memprobe spec's tune_heap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="arm64-int4-fast,arm64-int4,x86-int8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--text", type=Path, default=SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory.json")
    args = p.parse_args(argv)

    from transformers import AutoTokenizer

    from edgeopt import zoo
    from edgeopt.bundle import read_manifest
    from edgeopt.decoder.bench import BenchTokens, probe_memory
    from edgeopt.decoder.evaltext import text_tokens
    from edgeopt.decoder.validate import DecoderEvalConfig

    model = zoo.fetch("smollm2", log=_log)
    tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    tokens = BenchTokens.from_ids(text_tokens(tokenizer, args.text.read_text(encoding="utf-8"), 192), 128, 64)
    rows = {}
    for target in [t for t in args.targets.split(",") if t]:
        bundle = artifacts.edgeopt_bundle(model, EDGEOPT_RECIPES.get(target, target), args.text,
                                          DecoderEvalConfig(), _log)
        manifest = read_manifest(bundle)
        spec = {"kind": "onnx", "path": str(bundle / manifest["model"]), "io": manifest["decoder"],
                "tokenizer": str(bundle / "tokenizer.json"),
                "disabled_optimizers": list((manifest.get("session_options") or {})
                                            .get("disabled_optimizers") or [])}
        runs: dict[str, list[dict[str, Any]]] = {heap: [] for heap in HEAPS}
        for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
            for heap, tune in HEAPS.items():
                runs[heap].append(probe_memory(spec | {"tune_heap": tune}, tokens,
                                               threads=2))
        for heap, heap_runs in runs.items():
            rows[f"{target} ({heap})"] = _row(bundle / manifest["model"], heap_runs)
            _log(f"{target} ({heap}): peak {rows[f'{target} ({heap})']['peak_rss_mb']['median']:.0f} MB")
    result = {"machine": machine(), "command": " ".join(["bench_memory.py", *(argv or sys.argv[1:])]),
              "tokens": {"prompt": 128, "decode": 64, "threads": 2}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(markdown(result))
    return result


def _row(model: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    peaks = [r["peak_rss_bytes"] / 1e6 for r in runs]
    return {"file_mb": model.stat().st_size / 1e6,
            "peak_rss_mb": {"median": statistics.median(peaks), "min": min(peaks), "max": max(peaks)},
            "profile_mb": {k: statistics.median(r["profile"][k] / 1e6 for r in runs) for k in PARTS},
            "decode_step_ms": statistics.median(r["decode_step_s"] * 1e3 for r in runs),
            "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| target (heap) | file MB | peak RSS MB (min-max) | runtime | tokenizer | session "
             "(weights) | KV cache | arena | RSS after decode | load peak | decode step ms |",
             "|---|" + "---:|" * 10]
    for target, r in result["rows"].items():
        peak, prof = r["peak_rss_mb"], r["profile_mb"]
        lines.append(f"| {target} | {r['file_mb']:.1f} | {peak['median']:.0f} ({peak['min']:.0f}-"
                     f"{peak['max']:.0f}) | " + " | ".join(f"{prof[k]:.1f}" for k in PARTS)
                     + f" | {r['decode_step_ms']:.2f} |")
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[bench-memory] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
