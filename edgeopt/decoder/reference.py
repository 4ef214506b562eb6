"""The original PyTorch model behind the same small interface as :class:`OnnxCausalLM`,
so parity and benchmarks run identical token sequences through both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run PyTorch on ``threads`` intra-op threads, restoring the previous count after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchCausalLM:
    """A transformers causal LM in eval mode, fp32, on the CPU."""

    def __init__(self, model: Any, eos_token_ids: Sequence[int] = ()) -> None:
        self.model = model
        self.eos_token_ids = tuple(eos_token_ids)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits [batch, T, vocab] of unpadded rows ``ids`` [batch, T], no cache."""
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.from_numpy(np.asarray(ids, np.int64))).logits.float().numpy()

    def generate(self, prompt: Sequence[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
        """transformers' greedy ``generate``, with no logits processors (plain argmax)."""
        import torch

        ids = torch.tensor([list(prompt)], dtype=torch.int64)
        eos = list(self.eos_token_ids) if stop_at_eos and self.eos_token_ids else None
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                max_new_tokens=max_new_tokens, min_new_tokens=0, repetition_penalty=1.0,
                no_repeat_ngram_size=0, eos_token_id=eos,
                pad_token_id=self.eos_token_ids[0] if self.eos_token_ids else 0)
        return out[0, ids.shape[1]:].tolist()

    def prefill(self, prompt: Sequence[int]) -> tuple[Any, Any]:
        """Run the prompt with a fresh transformers cache; returns last logits and the cache."""
        import torch

        ids = torch.tensor([list(prompt)], dtype=torch.int64)
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True)
        return out.logits[0, -1], out.past_key_values

    def step(self, token: int, cache: Any) -> tuple[Any, Any]:
        """Feed one token after ``cache`` (which transformers grows in place)."""
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
        return out.logits[0, -1], out.past_key_values
