"""Peak memory of one variant, measured in a fresh process so variants cannot share pages.

    python -m edgeopt.decoder.memprobe < SPEC.json   ->   one JSON line on stdout

The spec names the variant (an ONNX file with its io, or a transformers folder) and the
tokens to run: one prefill, then the continuation one token at a time with the cache.
The child reports its resident-set high-water mark and its RSS just before loading the
model (interpreter plus libraries), so the model's own share can be read off.
"""

from __future__ import annotations

import json
import resource
import sys
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


def _run_onnx(spec: dict[str, Any]) -> int:
    import numpy as np  # noqa: F401  (loaded before the baseline, like onnxruntime)
    import onnxruntime  # noqa: F401

    from edgeopt.decoder.generate import OnnxCausalLM
    from edgeopt.decoder.io import DecoderIO

    io = DecoderIO.from_dict(spec["io"])
    baseline = _current_rss_bytes()
    lm = OnnxCausalLM.from_file(spec["path"], io, threads=spec["threads"],
                                disabled_optimizers=spec.get("disabled_optimizers", ()))
    _, past = lm.prefill(spec["prompt"], len(spec["prompt"]) + len(spec["continuation"]))
    for token in spec["continuation"]:
        _, past = lm.step(token, past)
    return baseline


def _run_torch(spec: dict[str, Any]) -> int:
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
    return baseline


def main() -> None:
    spec = json.loads(sys.stdin.read())
    baseline = {"onnx": _run_onnx, "torch": _run_torch}[spec["kind"]](spec)
    print(json.dumps({"peak_rss_bytes": _peak_rss_bytes(), "baseline_rss_bytes": baseline}))


if __name__ == "__main__":
    main()
