"""Decoder CPU benchmark: prefill and decode throughput, peak memory and file size.

Variants (the bundle, the fp32 ONNX graph, PyTorch eager fp32) run the same tokens:
a ``seq_len``-token prompt for prefill, then ``decode_tokens`` tokens one at a time with
the KV cache, teacher-forced so every variant does identical work whatever it predicts.
Timings are round-robin in one process (:func:`edgeopt.bench.time_side_by_side`); peak
memory is measured in a fresh process per variant (:mod:`edgeopt.decoder.memprobe`),
because a process's high-water mark cannot be reset and variants in one process share
libraries and allocator pools.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.bench import LatencyStats, time_side_by_side
from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.io import DecoderIO
from edgeopt.decoder.reference import TorchCausalLM, torch_threads
from edgeopt.recipe import BenchConfig

TORCH_BASELINE = "pytorch-eager-fp32"


@dataclass(frozen=True)
class BenchTokens:
    """The prompt (prefill) and the continuation fed one token at a time (decode)."""

    prompt: tuple[int, ...]
    continuation: tuple[int, ...]

    @classmethod
    def from_ids(cls, ids: Sequence[int], seq_len: int, decode_tokens: int) -> BenchTokens:
        """Real text ids, repeated when short, cut to exactly seq_len + decode_tokens."""
        need = seq_len + decode_tokens
        ids = list(ids) or [0]
        ids = (ids * (need // len(ids) + 1))[:need]
        return cls(tuple(ids[:seq_len]), tuple(ids[seq_len:]))


@dataclass
class DecoderBenchResult:
    config: dict[str, Any]
    prefill: dict[str, LatencyStats]
    decode: dict[str, LatencyStats]  # per generated token
    memory: dict[str, dict[str, int]]
    file_bytes: dict[str, int]
    baseline: str | None
    subject: str

    @property
    def speedup(self) -> float | None:
        """Baseline p50 decode latency over the subject's (decode dominates generation)."""
        if self.baseline is None or self.baseline not in self.decode:
            return None
        return self.decode[self.baseline].p50_ms / self.decode[self.subject].p50_ms

    def throughput(self) -> dict[str, dict[str, float | None]]:
        seq_len = self.config["input_shape"][1]
        out = {}
        for name in self.prefill:
            mem = self.memory.get(name, {})
            peak = mem.get("peak_rss_bytes")
            out[name] = {
                "prefill_tokens_per_s": seq_len / (self.prefill[name].p50_ms / 1e3),
                "decode_tokens_per_s": 1e3 / self.decode[name].p50_ms,
                "peak_rss_mb": peak / 1e6 if peak else None,
                "model_rss_mb": (peak - mem["baseline_rss_bytes"]) / 1e6 if peak else None,
                "file_mb": self.file_bytes[name] / 1e6 if name in self.file_bytes else None,
            }
            if mem.get("profile"):
                out[name]["memory_profile_mb"] = {k: v / 1e6 for k, v in mem["profile"].items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        latency = {f"{k} prefill": asdict(v) for k, v in self.prefill.items()}
        latency |= {f"{k} decode/token": asdict(v) for k, v in self.decode.items()}
        return {"config": self.config, "subject": self.subject, "baseline": self.baseline,
                "speedup_p50": self.speedup, "latency": latency, "throughput": self.throughput()}

    def to_markdown(self) -> str:
        """The throughput table for the report (latency percentiles are in the bench table)."""
        cfg = self.config
        lines = [f"Prefill of {cfg['input_shape'][1]} tokens; decode of {cfg['decode_tokens']} tokens "
                 f"one at a time with the KV cache (batch 1, {cfg['threads']} threads; medians of "
                 f"{cfg['repeats']} prefill and {cfg['decode_repeats']} decode runs). Peak RSS is "
                 "measured in a fresh process per variant; 'model' is peak minus the process's "
                 "RSS before loading the model.", "",
                 "| variant | prefill tok/s | decode tok/s | peak RSS MB | model MB | file MB |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name, t in self.throughput().items():
            cells = [_num(t[k]) for k in ("prefill_tokens_per_s", "decode_tokens_per_s",
                                          "peak_rss_mb", "model_rss_mb", "file_mb")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        profiles = {n: t["memory_profile_mb"] for n, t in self.throughput().items()
                    if "memory_profile_mb" in t}
        if profiles:
            lines += ["", "Where the memory goes (MB of RSS, read between steps in the probe: runtime = "
                      "interpreter, numpy and onnxruntime; session = weights as the kernels hold them; "
                      "arena = activations and scratch beyond the KV cache; load peak = the high-water "
                      "mark right after the session was made; with edgeopt's heap settings, as "
                      "`edgeopt generate` runs: edgeopt/heap.py):", "",
                      "| variant | " + " | ".join(_PROFILE.values()) + " |",
                      "|---|" + "---:|" * len(_PROFILE)]
            for name, prof in profiles.items():
                lines.append(f"| {name} | " + " | ".join(_num(prof.get(k)) for k in _PROFILE) + " |")
        return "\n".join(lines)


_PROFILE = {"runtime": "runtime", "tokenizer": "tokenizer", "session": "session (weights)",
            "kv_cache": "KV cache", "arena": "arena", "final_rss": "RSS after decode",
            "load_peak": "load peak"}


def bench_decoder(onnx_variants: dict[str, Path], io: DecoderIO, torch_lm: TorchCausalLM | None,
                  torch_path: Path | None, tokens: BenchTokens, config: BenchConfig, subject: str,
                  disabled_optimizers: tuple[str, ...] = ()) -> DecoderBenchResult:
    """Time every variant on ``tokens`` side by side, then probe each one's peak memory."""
    from edgeopt.runtime import make_session

    prefill: dict[str, Callable[[], Any]] = {}
    decode: dict[str, Callable[[], Any]] = {}
    for name, path in onnx_variants.items():
        session = make_session(path, threads=config.threads, spinning=True,
                               disabled_optimizers=disabled_optimizers)
        lm = OnnxCausalLM(session, io)
        prefill[name], decode[name] = _onnx_fns(lm, tokens)
    baseline = None
    if torch_lm is not None and config.torch_baseline:
        baseline = TORCH_BASELINE
        prefill[baseline], decode[baseline] = _torch_fns(torch_lm, tokens)
    # One decode run is decode_tokens calls, so fewer runs give comparable statistics.
    decode_repeats = max(3, config.repeats // 5)
    with torch_threads(config.threads):
        prefill_stats = time_side_by_side(prefill, config.warmup, config.repeats)
        decode_runs = time_side_by_side(decode, min(config.warmup, 1), decode_repeats)
    n = len(tokens.continuation)
    per_token = {k: _scaled(v, 1 / n) for k, v in decode_runs.items()}
    # The tokenizer an app would load beside the graph, so the profile shows its share too.
    tokenizer = Path(torch_path) / "tokenizer.json" if torch_path is not None else None
    tokenizer_spec = {"tokenizer": str(tokenizer)} if tokenizer is not None and tokenizer.is_file() else {}
    memory = {name: probe_memory({"kind": "onnx", "path": str(path), "io": io.to_dict(),
                                  "disabled_optimizers": list(disabled_optimizers)} | tokenizer_spec,
                                 tokens, config.threads) for name, path in onnx_variants.items()}
    files = {name: Path(path).stat().st_size for name, path in onnx_variants.items()}
    if baseline is not None and torch_path is not None:
        memory[baseline] = probe_memory({"kind": "torch", "path": str(torch_path)}, tokens,
                                        config.threads)
        files[baseline] = sum(p.stat().st_size for p in Path(torch_path).glob("*.safetensors"))
    cfg = asdict(config) | {"input_shape": [1, len(tokens.prompt)], "decode_repeats": decode_repeats,
                            "decode_tokens": n, "provider": "cpu"}
    return DecoderBenchResult(cfg, prefill_stats, per_token, memory, files, baseline, subject)


def probe_memory(spec: dict[str, Any], tokens: BenchTokens, threads: int) -> dict[str, Any]:
    """Run :mod:`edgeopt.decoder.memprobe` on one variant; returns its RSS figures."""
    spec = spec | {"prompt": list(tokens.prompt), "continuation": list(tokens.continuation),
                   "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "edgeopt.decoder.memprobe"],
                          input=json.dumps(spec), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe of {spec['path']} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _onnx_fns(lm: OnnxCausalLM, tokens: BenchTokens) -> tuple[Callable[[], Any], Callable[[], Any]]:
    # Room for the whole continuation, as generate() allocates: no run grows the cache.
    capacity = len(tokens.prompt) + len(tokens.continuation)
    _, start = lm.prefill(tokens.prompt, capacity)

    def decode() -> None:
        # Every run starts from the prompt: concatenated pasts are never written to, and
        # an in-place cache is overwritten from the prompt's end on.
        past = start
        for token in tokens.continuation:
            _, past = lm.step(token, past)

    return (lambda: lm.prefill(tokens.prompt, capacity)), decode


def _torch_fns(lm: TorchCausalLM, tokens: BenchTokens) -> tuple[Callable[[], Any], Callable[[], Any]]:
    _, cache = lm.prefill(tokens.prompt)
    length = len(tokens.prompt)

    def decode() -> None:
        grown = cache.get_seq_length() - length
        if grown:
            cache.crop(-grown)  # transformers grows the cache in place: back to the prompt
        state = cache
        for token in tokens.continuation:
            _, state = lm.step(token, state)

    return (lambda: lm.prefill(tokens.prompt)), decode


def _scaled(stats: LatencyStats, factor: float) -> LatencyStats:
    return LatencyStats(stats.name, stats.p50_ms * factor, stats.p90_ms * factor,
                        stats.p99_ms * factor, stats.mean_ms * factor, stats.std_ms * factor,
                        stats.min_ms * factor, stats.runs,
                        tuple(round(s * factor, 4) for s in stats.samples_ms))


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


@dataclass(frozen=True)
class Throughput:
    """The decoder benchmark's tokens per second and memory (a report section)."""

    key: ClassVar[str] = "throughput"
    title: ClassVar[str] = "Decoder throughput and memory"
    result: DecoderBenchResult

    def to_dict(self) -> dict[str, Any]:
        return self.result.throughput()

    def to_markdown(self) -> str:
        return self.result.to_markdown()
