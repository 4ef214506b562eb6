"""Peak memory of one variant, measured in a fresh process so variants cannot share pages.

    python -m edgeopt.decoder.memprobe < SPEC.json   ->   one JSON line on stdout

The spec names the variant (an ONNX file with its io, or a transformers folder) and the
tokens to run: one prefill, then the continuation one token at a time with the cache.
The child reports its resident-set high-water mark and its RSS just before loading the
model (interpreter plus libraries), so the model's own share can be read off.

An ONNX variant also reports where its memory goes (``profile``), read off the RSS
between steps in the order an app takes them: the runtime (interpreter, numpy,
onnxruntime), the tokenizer (``tokenizer.json`` through the ``tokenizers`` library, when
the spec names one), the session (weights as the kernels hold them, prepacked), the KV
cache (its buffers, computed from their shapes), and the arena (activations and
scratch: what the first prefill and decode steps added beyond the cache). The high-water
mark can exceed the final RSS: ``load_peak`` is the high-water mark right after the
session was made (the model file's bytes and the tensors built from them overlap).

The child fixes glibc's mmap threshold first and trims the heap after the tokenizer and
after the session (:mod:`edgeopt.heap`), as ``edgeopt generate`` does, unless the spec
says ``"tune_heap": false`` (benchmarks set that to show what glibc's default costs). It
also reports the median decode step, so a heap setting that saved memory at the price of
speed would show.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _peak_rss_bytes() -> int:
    # Linux: VmHWM belongs to this process image. ru_maxrss would not do: it survives
    # exec, so it can report the parent's RSS at fork time instead of ours.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS bytes, else KiB


def _current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _run_onnx(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np  # noqa: F401  (loaded before the baseline, like onnxruntime)
    import onnxruntime  # noqa: F401

    from edgeopt import heap
    from edgeopt.decoder.generate import OnnxCausalLM
    from edgeopt.decoder.io import DecoderIO

    tune = spec.get("tune_heap", True)
    if tune:
        heap.release_large_frees()
    io = DecoderIO.from_dict(spec["io"])
    baseline = _current_rss_bytes()
    tokenizer = None
    if spec.get("tokenizer"):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(spec["tokenizer"])
        if tune:
            heap.trim()
    with_tokenizer = _current_rss_bytes()
    lm = OnnxCausalLM.from_file(spec["path"], io, threads=spec["threads"],
                                disabled_optimizers=spec.get("disabled_optimizers", ()))
    if tune:
        heap.trim()
    with_session, load_peak = _current_rss_bytes(), _peak_rss_bytes()
    capacity = len(spec["prompt"]) + len(spec["continuation"])
    _, past = lm.prefill(spec["prompt"], capacity)
    steps = []
    for token in spec["continuation"]:
        start = time.perf_counter()
        _, past = lm.step(token, past)
        steps.append(time.perf_counter() - start)
    done = _current_rss_bytes()
    buffers = past.arrays if hasattr(past, "arrays") else past  # in-place cache, or the past dict
    cache = sum(a.nbytes for a in buffers.values())
    del tokenizer  # held until here, so the RSS read after decode still counts it
    profile = {"runtime": baseline, "tokenizer": with_tokenizer - baseline,
               "session": with_session - with_tokenizer, "kv_cache": cache,
               "arena": max(done - with_session - cache, 0), "load_peak": load_peak,
               "final_rss": done}
    out: dict[str, Any] = {"baseline_rss_bytes": baseline, "profile": profile}
    return out | ({"decode_step_s": statistics.median(steps)} if steps else {})


def _run_torch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from edgeopt.decoder.reference import TorchCausalLM

    torch.set_num_threads(spec["threads"])
    baseline = _current_rss_bytes()
    model = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=torch.float32,
                                                 local_files_only=True).eval()
    lm = TorchCausalLM(model)
    _, cache = lm.prefill(spec["prompt"])
    for token in spec["continuation"]:
        _, cache = lm.step(token, cache)
    return {"baseline_rss_bytes": baseline}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    out = {"onnx": _run_onnx, "torch": _run_torch}[spec["kind"]](spec)
    print(json.dumps({"peak_rss_bytes": _peak_rss_bytes()} | out))


if __name__ == "__main__":
    main()
