"""Text generation over an exported decoder: prefill once, then one token per step with
the KV cache. Greedy decoding reproduces transformers' ``generate(do_sample=False)``
token for token on an fp32 bundle; sampling applies temperature, then top-k, then top-p
(transformers' order) with its own seeded generator, so it is reproducible per seed but
does not draw the same tokens as torch's generator.

Graphs exported with an in-place cache (``DecoderIO.cache_in_place``) run batch-1
prefill and decode through :class:`BufferCache`: preallocated buffers bound as both past
and present, so a step writes one position per layer instead of copying the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.decoder.io import DecoderIO
from edgeopt.errors import BundleError, UsageError
from edgeopt.families import TEXT_GENERATION

Past = dict[str, np.ndarray]
# Room a prefill leaves in an in-place cache when the caller does not say how many
# tokens will follow; a step that runs out doubles the buffers.
DEFAULT_ROOM = 256


@dataclass(frozen=True)
class BufferCache:
    """A batch-1 KV cache in preallocated buffers that each step writes its new K/V into.

    Stepping from a state writes the buffers from its ``length`` on, so every state
    longer than it stops being valid: stepping again from an earlier state (a benchmark
    repeat) is fine, two branches from one state are not.
    """

    arrays: dict[str, np.ndarray]  # past name -> [1, kv_heads, capacity, head_dim]
    values: dict[str, Any]  # the same memory as onnxruntime OrtValues, for binding
    length: int

    @classmethod
    def allocate(cls, io: DecoderIO, capacity: int) -> BufferCache:
        from onnxruntime import OrtValue

        shape = (1, io.num_kv_heads, capacity, io.head_dim)
        arrays = {name: np.zeros(shape, np.float32) for name in io.past_names}
        # A CPU OrtValue made from an array wraps (and keeps alive) the array's memory.
        return cls(arrays, {n: OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}, 0)

    @property
    def capacity(self) -> int:
        return next(iter(self.arrays.values())).shape[2]

    def with_room(self, io: DecoderIO, needed: int) -> BufferCache:
        """This state, moved to buffers twice as large when fewer than ``needed``
        positions are free."""
        if self.length + needed <= self.capacity:
            return self
        grown = BufferCache.allocate(io, max(2 * self.capacity, self.length + needed))
        for name, array in self.arrays.items():
            grown.arrays[name][:, :, :self.length] = array[:, :, :self.length]
        return BufferCache(grown.arrays, grown.values, self.length)


Cache = Past | BufferCache


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
        # Buffers bound in place must live where the kernels run; other providers get the
        # plain concatenating calls, which the same graph also answers.
        self.in_place = io.cache_in_place and session.get_providers()[:1] == ["CPUExecutionProvider"]
        # The binding of the cache last run: binding 60 cache tensors costs ~0.16 ms, a
        # few percent of an INT4 step, so steps on the same buffers only rebind the inputs.
        self._binding: Any = None
        self._bound_to: dict[str, Any] | None = None

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

        from edgeopt import heap
        from edgeopt.bundle import bundle_file, read_manifest

        bundle = Path(bundle)
        manifest = read_manifest(bundle)
        if manifest.get("task") != TEXT_GENERATION or "decoder" not in manifest:
            raise BundleError(f"{bundle} holds a {manifest.get('task')} model, not a text "
                              "generator; compile a causal LM to generate")
        io = DecoderIO.from_dict(manifest["decoder"])
        tokenizer = AutoTokenizer.from_pretrained(str(bundle), local_files_only=True)
        heap.trim()  # the JSON parse's freed blocks go back before the session's load peaks
        providers = manifest.get("providers") or ("CPUExecutionProvider",)
        disabled = (manifest.get("session_options") or {}).get("disabled_optimizers") or ()
        lm = cls.from_file(bundle_file(bundle, manifest["model"]), io, tokenizer, threads,
                           providers, disabled)
        heap.trim()
        return lm

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

    def prefill(self, prompt: Sequence[int], capacity: int | None = None) -> tuple[np.ndarray, Cache]:
        """Run the prompt (batch 1); returns the last position's logits and the cache.
        ``capacity``: total tokens the cache should hold without growing (in-place
        graphs only; default: the prompt plus ``DEFAULT_ROOM``)."""
        if not prompt:
            raise UsageError("the prompt is empty; pass at least one token")
        if self.in_place:
            room = capacity or len(prompt) + DEFAULT_ROOM
            cache = BufferCache.allocate(self.io, max(room, len(prompt)))
            return self._run_in_place(list(prompt), cache)
        logits, past = self.forward(*_feeds(list(prompt), 0), self.io.empty_past(1))
        return logits[0, -1], past

    def step(self, token: int, cache: Cache) -> tuple[np.ndarray, Cache]:
        """Feed one token after ``cache``; returns its logits and the grown cache."""
        if isinstance(cache, BufferCache):
            return self._run_in_place([token], cache.with_room(self.io, 1))
        length = next(iter(cache.values())).shape[2]
        logits, past = self.forward(*_feeds([token], length), cache)
        return logits[0, -1], past

    def _run_in_place(self, tokens: list[int], cache: BufferCache) -> tuple[np.ndarray, BufferCache]:
        """One graph call whose presents are written into ``cache``'s own buffers."""
        if self._bound_to is not cache.values:
            self._binding = self.session.io_binding()
            for past, present in zip(self.io.past_names, self.io.present_names, strict=True):
                self._binding.bind_ortvalue_input(past, cache.values[past])
                self._binding.bind_ortvalue_output(present, cache.values[past])
            self._bound_to = cache.values
        binding = self._binding
        ids, mask, pos = _feeds(tokens, cache.length)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_cpu_input("position_ids", pos)
        # A new array per call (callers keep logits), bound by address: a binding reused
        # with only a device named would hand back the previous call's output.
        logits = np.empty((1, len(tokens), self.io.vocab_size), np.float32)
        binding.bind_output("logits", "cpu", element_type=np.float32, shape=logits.shape,
                            buffer_ptr=logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        return logits[0, -1], BufferCache(cache.arrays, cache.values, cache.length + len(tokens))

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
        logits, past = self.prefill(prompt, capacity=len(prompt) + max_new_tokens)
        out: list[int] = []
        try:
            while True:
                token = pick(logits)
                out.append(token)
                if token in eos or len(out) == max_new_tokens:
                    return out
                logits, past = self.step(token, past)
        finally:
            self._binding = self._bound_to = None  # let the cache's buffers go

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
