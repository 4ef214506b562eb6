"""Text generation over an exported decoder: prefill once, then one token per step with
the KV cache. Greedy decoding reproduces transformers' ``generate(do_sample=False)``
token for token on an fp32 bundle; sampling applies temperature, then top-k, then top-p
(transformers' order) with its own seeded generator, so it is reproducible per seed but
does not draw the same tokens as torch's generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.decoder.io import DecoderIO
from edgeopt.errors import BundleError, UsageError

Past = dict[str, np.ndarray]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling instead of greedy: ``top_k=0`` and ``top_p=1`` switch those filters off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UsageError(f"temperature must be > 0 (omit it for greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be within (0, 1], got {self.top_p}")


class OnnxCausalLM:
    """A decoder graph with its io contract (and optionally its tokenizer)."""

    def __init__(self, session: Any, io: DecoderIO, tokenizer: Any = None) -> None:
        self.session = session
        self.io = io
        self.tokenizer = tokenizer
        declared = {i.name for i in session.get_inputs()}
        missing = sorted(set(io.input_names) - declared)
        if missing:
            raise BundleError(f"the graph lacks decoder inputs {', '.join(missing[:4])}; "
                              "it was not exported by edgeopt's decoder path")
        self._outputs = io.output_names

    @classmethod
    def from_file(cls, path: Path | str, io: DecoderIO, tokenizer: Any = None, threads: int = 2,
                  providers: Sequence[str] = ("CPUExecutionProvider",),
                  disabled_optimizers: Sequence[str] = ()) -> OnnxCausalLM:
        from edgeopt.runtime import make_session

        session = make_session(path, threads=threads, providers=providers,
                               disabled_optimizers=disabled_optimizers)
        return cls(session, io, tokenizer)

    @classmethod
    def from_bundle(cls, bundle: Path | str, threads: int = 2) -> OnnxCausalLM:
        """Load a compiled bundle: manifest (hashes checked), graph and tokenizer."""
        from transformers import AutoTokenizer

        from edgeopt.bundle import bundle_file, read_manifest

        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        if manifest.get("task") != "text-generation" or "decoder" not in manifest:
            raise BundleError(f"{bundle} holds a {manifest.get('task')} model, not a text "
                              "generator; compile a causal LM to generate")
        io = DecoderIO.from_dict(manifest["decoder"])
        tokenizer = AutoTokenizer.from_pretrained(str(bundle), local_files_only=True)
        providers = manifest.get("providers") or ("CPUExecutionProvider",)
        disabled = (manifest.get("session_options") or {}).get("disabled_optimizers") or ()
        return cls.from_file(bundle_file(bundle, manifest["model"]), io, tokenizer, threads,
                             providers, disabled)

    # -- graph calls ---------------------------------------------------------------------------
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: Past) -> tuple[np.ndarray, Past]:
        """One graph call; returns the logits and the presents keyed by the next past names."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "position_ids": position_ids, **past}
        out = self.session.run(self._outputs, feeds)
        return out[0], dict(zip(self.io.past_names, out[1:], strict=True))

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits [batch, T, vocab] of unpadded rows ``ids`` [batch, T], no cache."""
        ids = np.asarray(ids, dtype=np.int64)
        batch, length = ids.shape
        pos = np.broadcast_to(np.arange(length, dtype=np.int64), ids.shape).copy()
        return self.forward(ids, np.ones_like(ids), pos, self.io.empty_past(batch))[0]

    def prefill(self, prompt: Sequence[int]) -> tuple[np.ndarray, Past]:
        """Run the prompt (batch 1); returns the last position's logits and the cache."""
        if not prompt:
            raise UsageError("the prompt is empty; pass at least one token")
        logits, past = self.forward(*_feeds(list(prompt), 0), self.io.empty_past(1))
        return logits[0, -1], past

    def step(self, token: int, past: Past) -> tuple[np.ndarray, Past]:
        """Feed one token after ``past``; returns its logits and the grown cache."""
        length = next(iter(past.values())).shape[2]
        logits, past = self.forward(*_feeds([token], length), past)
        return logits[0, -1], past

    # -- decoding --------------------------------------------------------------------------------
    def generate(self, prompt: Sequence[int], max_new_tokens: int,
                 sampling: SamplingConfig | None = None, stop_at_eos: bool = True) -> list[int]:
        """New token ids after ``prompt``: greedy unless ``sampling`` is given.

        Stops after an end-of-sequence id (kept in the output, as transformers does).
        """
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        limit = self.io.max_positions
        if limit is not None and len(prompt) + max_new_tokens > limit:
            raise UsageError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceed "
                             f"the model's {limit} positions; shorten one of them")
        pick = _greedy if sampling is None else _sampler(sampling)
        eos = set(self.io.eos_token_ids) if stop_at_eos else set()
        logits, past = self.prefill(prompt)
        out: list[int] = []
        while True:
            token = pick(logits)
            out.append(token)
            if token in eos or len(out) == max_new_tokens:
                return out
            logits, past = self.step(token, past)

    def generate_text(self, prompt: str, max_new_tokens: int = 64,
                      sampling: SamplingConfig | None = None) -> str:
        """Tokenize ``prompt``, generate, and decode only the new tokens."""
        if self.tokenizer is None:
            raise UsageError("this model was loaded without a tokenizer; use from_bundle")
        ids = self.tokenizer(prompt)["input_ids"]
        new = self.generate(ids, max_new_tokens, sampling)
        # Decode with the prompt as context: sentencepiece tokenizers drop the leading
        # space of a continuation decoded on its own.
        head = self.tokenizer.decode(ids, skip_special_tokens=True)
        full = self.tokenizer.decode(ids + new, skip_special_tokens=True)
        return full[len(head):] if full.startswith(head) else self.tokenizer.decode(
            new, skip_special_tokens=True)


def _feeds(tokens: list[int], start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray([tokens], dtype=np.int64)
    mask = np.ones((1, start + len(tokens)), dtype=np.int64)
    pos = np.arange(start, start + len(tokens), dtype=np.int64)[None]
    return ids, mask, pos


def _greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def _sampler(config: SamplingConfig) -> Callable[[np.ndarray], int]:
    rng = np.random.default_rng(config.seed)

    def pick(logits: np.ndarray) -> int:
        return int(rng.choice(logits.shape[-1], p=sampling_probs(logits, config)))

    return pick


def sampling_probs(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """Next-token distribution after temperature, top-k and top-p (nucleus) filtering."""
    scores = logits.astype(np.float64) / config.temperature
    if 0 < config.top_k < scores.size:
        kth = np.partition(scores, -config.top_k)[-config.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if config.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        before = np.cumsum(probs[order]) - probs[order]
        probs[order[before >= config.top_p]] = 0.0
        probs /= probs.sum()
    return probs
