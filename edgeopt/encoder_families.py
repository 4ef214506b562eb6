"""Encoder families: what differs between encoder model types, one small adapter each.

Generic code (the task adapters, the export, the fusions) asks this table rather than
branching on ``model_type``. Every type in :data:`edgeopt.families.ENCODER_TYPES` has
an entry; a new encoder family is one line here plus its name there.

What every family shares is not repeated: each is traced by the TorchScript exporter
with eager attention (DeBERTa's relative-position buckets, ModernBERT's rotary
embeddings and sliding-window mask all trace with dynamic batch and sequence), and its
fusions are kept only when the fused graph matches the plain export on real rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.families import ENCODER_TYPES

Config = Mapping[str, Any]


def _always(_config: Config) -> bool:
    return True


def _never(_config: Config) -> bool:
    return False


def _has_type_table(config: Config) -> bool:
    # DeBERTa-v3 ships type_vocab_size 0: token_type_ids are accepted and ignored, and
    # the exporter would drop the unused input the manifest still named.
    return int(config.get("type_vocab_size", 0) or 0) > 0


@dataclass(frozen=True)
class EncoderFamily:
    """How one encoder ``model_type`` is fed and fused."""

    model_type: str
    # onnxruntime transformer-optimizer rules to try (None: no fusions at all).
    ort_model_type: str | None = "bert"
    # Whether the model reads ``token_type_ids`` (given its config.json): when it does
    # not, the graph takes none even if the tokenizer produces them.
    reads_token_types: Callable[[Config], bool] = _always
    # config.json keys of the head count and hidden width the fusions need.
    heads_key: str = "num_attention_heads"
    hidden_key: str = "hidden_size"

    def heads_and_hidden(self, config: Config) -> tuple[int, int]:
        """(num_heads, hidden_size); 0 lets onnxruntime read them from the graph."""
        return int(config.get(self.heads_key, 0) or 0), int(config.get(self.hidden_key, 0) or 0)


def _registry(*families: EncoderFamily) -> dict[str, EncoderFamily]:
    table: dict[str, EncoderFamily] = {}
    for family in families:
        if family.model_type in table:
            raise ValueError(f"encoder family {family.model_type!r} declared twice")
        table[family.model_type] = family
    if set(table) != set(ENCODER_TYPES):
        raise ValueError(f"ENCODER_TYPES and the encoder families differ: "
                         f"{sorted(set(table) ^ set(ENCODER_TYPES))}")
    return table


ENCODER_FAMILIES: dict[str, EncoderFamily] = _registry(
    EncoderFamily("bert"),
    EncoderFamily("roberta"),
    EncoderFamily("xlm-roberta"),
    EncoderFamily("electra"),
    EncoderFamily("mpnet"),
    # No segment embeddings; its config names heads and width n_heads and dim.
    EncoderFamily("distilbert", reads_token_types=_never, heads_key="n_heads", hidden_key="dim"),
    # BERT's rules fuse its Gelu and LayerNorm; disentangled attention matches no
    # Attention pattern and stays as exported.
    EncoderFamily("deberta-v2", reads_token_types=_has_type_table),
    # No segment embeddings (its forward has no token_type_ids); BERT's rules fuse the
    # GeGLU's Gelu, rotary attention stays as exported.
    EncoderFamily("modernbert", reads_token_types=_never),
    # BERT-shaped attention, so BERT's rules fuse it (its layers share one set of
    # weights, and onnxruntime fuses one layer's attention only).
    EncoderFamily("albert"),
)


def family_of(model_type: str) -> EncoderFamily:
    """The adapter of a supported encoder ``model_type`` (the source check ran first)."""
    return ENCODER_FAMILIES[model_type]
