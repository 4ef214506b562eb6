"""A float32 GGUF of a tiny Hugging Face Llama, written in code with gguf-py, so llama.cpp
runs the same random weights as PyTorch.

Only what llama.cpp's ``llama`` architecture reads: hyperparameters, a byte-level BPE
vocabulary (tokens, types, merges) and the tensors under llama.cpp's names. Hugging
Face rotates each head's halves for RoPE while llama.cpp rotates adjacent pairs, so the
query and key rows are reordered within every head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
          "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _halves_to_pairs(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from [first half, second half] to interleaved (x0, x(d/2), x1, ...)."""
    rows = w.shape[0] // heads
    return w.reshape(heads, 2, rows // 2, -1).swapaxes(1, 2).reshape(w.shape)


def _vocab(folder: Path) -> tuple[list[str], list[int], list[str]]:
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    vocab.update(special)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    types = [3 if t in special else 1 for t in tokens]  # 3: control, 1: normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges


def write_llama_gguf(folder: Path, dest: Path) -> Path:
    """``dest``: the tied-embedding Llama in ``folder`` as a float32 GGUF."""
    import torch
    from gguf import GGUFWriter, LlamaFileType
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    w = GGUFWriter(dest, arch="llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(LlamaFileType.ALL_F32)
    tokens, types, merges = _vocab(folder)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_add_bos_token(False)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, name in _LAYER.items():
            t = state[f"model.layers.{i}.{hf}.weight"]
            if name in ("attn_q", "attn_k"):
                t = _halves_to_pairs(t, heads if name == "attn_q" else kv_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dest
