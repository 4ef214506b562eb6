"""Worker for the PyTorch eager fp32 reference (transformers on the CPU).

    python benchmarks/peers/torch_worker.py    (JSON lines on stdin/stdout, see wire.py)

Its ``score`` replies are what every other variant's perplexity and agreement are
judged against. ``generate`` is greedy with transformers' own KV cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scoring import score_windows
from wire import serve, timed_greedy


class TorchWorker:
    def __init__(self) -> None:
        self.lm: Any = None

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        from edgeopt.decoder.reference import TorchCausalLM

        # Set once for the process: the reference's context manager would restore it
        # around every call.
        torch.set_num_threads(req["threads"])
        model = AutoModelForCausalLM.from_pretrained(req["model"], dtype=torch.float32,
                                                     local_files_only=True).eval()
        self.lm = TorchCausalLM(model)
        return {"file_bytes": sum(p.stat().st_size for p in _weights(req["model"])),
                "runtime": f"torch {torch.__version__}"}

    def generate(self, req: dict[str, Any]) -> dict[str, Any]:
        import torch

        prompt, new_tokens = list(req["prompt"]), int(req["new_tokens"])
        state: dict[str, Any] = {}

        def first() -> int:
            logits, state["cache"] = self.lm.prefill(prompt)
            return int(torch.argmax(logits))

        def step(token: int) -> int:
            logits, state["cache"] = self.lm.step(token, state["cache"])
            return int(torch.argmax(logits))

        return timed_greedy(first, step, new_tokens)

    def score(self, req: dict[str, Any]) -> dict[str, Any]:
        return score_windows(lambda ids: self.lm.logits(np.asarray([ids]))[0], req["windows"])


def _weights(folder: str) -> list[Any]:
    from pathlib import Path

    return sorted(Path(folder).glob("*.safetensors"))


if __name__ == "__main__":
    w = TorchWorker()
    serve({"load": w.load, "generate": w.generate, "score": w.score})
