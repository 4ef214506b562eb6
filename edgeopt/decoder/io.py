"""The input/output contract of an exported decoder graph, as written into the manifest.

One graph serves prefill and decode:

    input_ids       int64 [batch, sequence]
    attention_mask  int64 [batch, total_sequence]        total = past + sequence, 1 = keep
    position_ids    int64 [batch, sequence]
    past_key_values.{i}.key / .value   float32 [batch, kv_heads, past_sequence, head_dim]
 -> logits          float32 [batch, sequence, vocab]
    present.{i}.key / .value           float32 [batch, kv_heads, total_sequence, head_dim]

Prefill feeds a zero-length past; each decode step feeds the previous presents back.

When the io says ``cache_in_place``, the graph also accepts each past as a buffer with
room to spare: ``past_sequence`` is then the buffer's capacity, the attention mask's
length still says how many positions are filled (``total_sequence``), and the present
has the buffer's shape with the new positions written after the filled ones. Binding
present to the same buffer as past (onnxruntime IOBinding) makes a decode step write
only its new K/V instead of copying the cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeopt.errors import BundleError, ModelError

IO_VERSION = 1


def past_name(layer: int, kind: str) -> str:
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"


@dataclass(frozen=True)
class DecoderIO:
    """Names, dtypes and dynamic axes of a decoder graph, and the cache geometry."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    # Longest sequence the position table (or RoPE config) was trained for.
    max_positions: int | None
    eos_token_ids: tuple[int, ...] = ()
    # Past and present may share one preallocated buffer per cache tensor (see above).
    cache_in_place: bool = False
    version: int = IO_VERSION

    def __post_init__(self) -> None:
        if min(self.num_layers, self.num_kv_heads, self.head_dim, self.vocab_size) < 1:
            raise ModelError(f"decoder geometry must be positive, got {self}")

    @property
    def past_names(self) -> list[str]:
        return [past_name(i, k) for i in range(self.num_layers) for k in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [present_name(i, k) for i in range(self.num_layers) for k in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids", *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *self.present_names]

    def input_axes(self) -> dict[str, list[str | int]]:
        """Shape of every input, dynamic axes by name."""
        cache: list[str | int] = ["batch", self.num_kv_heads, "past_sequence", self.head_dim]
        return {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "total_sequence"],
                "position_ids": ["batch", "sequence"]} | {n: list(cache) for n in self.past_names}

    def output_axes(self) -> dict[str, list[str | int]]:
        """Shape of every output, dynamic axes by name."""
        cache: list[str | int] = ["batch", self.num_kv_heads, "total_sequence", self.head_dim]
        return {"logits": ["batch", "sequence", self.vocab_size]} | {
            n: list(cache) for n in self.present_names}

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Zero-length cache for a prefill."""
        z = np.zeros((batch, self.num_kv_heads, 0, self.head_dim), np.float32)
        return dict.fromkeys(self.past_names, z)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``decoder`` section: geometry plus every name with dtype and shape."""
        data = asdict(self)
        data["eos_token_ids"] = list(self.eos_token_ids)
        data["inputs"] = [{"name": n, "dtype": "float32" if n.startswith("past") else "int64",
                           "shape": s} for n, s in self.input_axes().items()]
        data["outputs"] = [{"name": n, "dtype": "float32", "shape": s}
                           for n, s in self.output_axes().items()]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> DecoderIO:
        """Read the manifest's ``decoder`` section back (names are derived, not trusted)."""
        try:
            if int(data["version"]) != IO_VERSION:
                raise BundleError(f"decoder io version {data['version']} is not supported "
                                  f"(this edgeopt reads version {IO_VERSION}); recompile the bundle")
            max_pos = data.get("max_positions")
            return cls(num_layers=int(data["num_layers"]), num_kv_heads=int(data["num_kv_heads"]),
                       head_dim=int(data["head_dim"]), vocab_size=int(data["vocab_size"]),
                       max_positions=None if max_pos is None else int(max_pos),
                       eos_token_ids=tuple(int(t) for t in data.get("eos_token_ids", ())),
                       cache_in_place=bool(data.get("cache_in_place", False)))
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"manifest decoder section is malformed ({err}); recompile the "
                              "bundle") from None


def decoder_io(config: Any, generation_config: Any = None) -> DecoderIO:
    """The io of a transformers causal LM from its config (GPT-2 names included)."""
    c = config.get_text_config(decoder=True)
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    max_pos = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
    return DecoderIO(num_layers=int(c.num_hidden_layers), num_kv_heads=int(kv_heads),
                     head_dim=int(head_dim), vocab_size=int(c.vocab_size),
                     max_positions=int(max_pos) if max_pos else None,
                     eos_token_ids=_eos_ids(generation_config, c))


def _eos_ids(generation_config: Any, config: Any) -> tuple[int, ...]:
    # generate() stops on the generation config's ids, which may differ from the model's.
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(t) for t in (eos if isinstance(eos, (list, tuple)) else [eos]))
