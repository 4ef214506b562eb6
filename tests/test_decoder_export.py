"""KV-cache export of tiny random Llama and GPT-2: one graph for prefill and decode,
named axes and projections, a tied embedding stored once, cache steps equal to a full
recompute (and to PyTorch).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeopt.decoder.generate import OnnxCausalLM

MODELS = ["tiny_llama_onnx", "tiny_gpt2_onnx"]


def _padded_batch(vocab: int, length: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, size=(2, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # row 1 is left-padded by 3
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None).astype(np.int64)
    return ids, mask, pos


@pytest.mark.parametrize("fixture", MODELS)
def test_cache_steps_equal_full_recompute_and_pytorch(fixture, request):
    path, io, loaded = request.getfixturevalue(fixture)
    lm = OnnxCausalLM.from_file(path, io, threads=1)
    ids, mask, pos = _padded_batch(io.vocab_size)
    full, _ = lm.forward(ids, mask, pos, io.empty_past(2))
    # Prefill 5 tokens, then decode the rest one at a time through the cache.
    logits, past = lm.forward(ids[:, :5], mask[:, :5], pos[:, :5], io.empty_past(2))
    steps = [logits]
    for t in range(5, ids.shape[1]):
        logits, past = lm.forward(ids[:, t:t + 1], mask[:, :t + 1], pos[:, t:t + 1], past)
        steps.append(logits)
    cached = np.concatenate(steps, axis=1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5)
    assert past["past_key_values.0.key"].shape == (2, io.num_kv_heads, ids.shape[1], io.head_dim)
    with torch.no_grad():
        ref = loaded.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           position_ids=torch.from_numpy(pos)).logits.numpy()
    np.testing.assert_allclose(full[valid], ref[valid], atol=1e-4)


@pytest.mark.parametrize("fixture", MODELS)
def test_graph_io_follows_the_contract(fixture, request):
    path, io, _ = request.getfixturevalue(fixture)
    graph = onnx.load(str(path)).graph

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [v.name for v in graph.input] == io.input_names
    assert [v.name for v in graph.output] == io.output_names
    shapes = {v.name: dims(v) for v in [*graph.input, *graph.output]}
    assert shapes["attention_mask"] == ["batch", "total_sequence"]
    assert shapes[f"past_key_values.{io.num_layers - 1}.value"] == [
        "batch", io.num_kv_heads, "past_sequence", io.head_dim]
    assert shapes["present.0.key"] == ["batch", io.num_kv_heads, "total_sequence", io.head_dim]
    assert shapes["logits"] == ["batch", "sequence", io.vocab_size]
    assert io.num_layers == 2 and io.eos_token_ids == (0,)


def test_projections_are_named_after_their_modules(tiny_llama_onnx, tiny_gpt2_onnx):
    llama = {n.name for n in onnx.load(str(tiny_llama_onnx[0])).graph.node}
    for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        assert f"model.layers.1.{proj}/MatMul" in llama
    assert "lm_head/MatMul" in llama
    gpt2 = {n.name for n in onnx.load(str(tiny_gpt2_onnx[0])).graph.node}
    assert {"transformer.h.0.attn.c_attn/Gemm", "transformer.h.1.mlp.c_proj/Gemm",
            "lm_head/MatMul"} <= gpt2


@pytest.mark.parametrize("fixture", MODELS)
def test_tied_embedding_is_stored_once(fixture, request):
    path, io, loaded = request.getfixturevalue(fixture)
    model = onnx.load(str(path))
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer]
    hidden = loaded.model.get_input_embeddings().weight.shape[1]
    assert sizes.count(io.vocab_size * hidden) == 1, "the lm_head got its own copy of the table"
    float_bytes = 4 * sum(s for s, t in zip(sizes, model.graph.initializer, strict=True)
                          if t.data_type == onnx.TensorProto.FLOAT)
    param_bytes = 4 * sum(p.numel() for p in loaded.model.parameters())  # tied counted once
    assert float_bytes < param_bytes + 16_384  # + small constants (rotary, masks)


@pytest.mark.parametrize("fixture", MODELS)
def test_attention_takes_the_cache_and_grouped_heads_itself(fixture, request):
    """Every layer's attention is one GroupQueryAttention that reads the 3-D projections
    (unrotated: it applies the rotary itself) and the past directly: no per-head
    Transpose/Reshape, no repeat_kv Expand, no cache Concat, no rotary tables stored."""
    path, io, loaded = request.getfixturevalue(fixture)
    nodes = onnx.load(str(path)).graph.node
    attention = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    assert len(attention) == io.num_layers and io.cache_in_place
    assert not [n for n in nodes if n.op_type in ("Attention", "RotaryEmbedding")]
    heads = loaded.model.config.num_attention_heads
    rotary = fixture == "tiny_llama_onnx"
    for node in attention:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["num_heads"] == heads and attrs["kv_num_heads"] == io.num_kv_heads
        assert attrs.get("do_rotary", 0) == rotary
        layer = node_layer(node, 3)
        assert list(node.input[3:5]) == [f"past_key_values.{layer}.{k}" for k in ("key", "value")]
        assert list(node.output[1:]) == [f"present.{layer}.{k}" for k in ("key", "value")]
    _assert_no_per_head_plumbing(nodes)


def test_concat_cache_keeps_onnx_attention(tiny_llama_lm, tmp_path):
    """``kv_cache: concat`` stops at ONNX Attention (any opset-23 runtime), with the same
    folding of the per-head plumbing, and the io says the cache is not in place."""
    from transformers import AutoModelForCausalLM

    from edgeopt.decoder.export import export_decoder
    from edgeopt.recipe import ExportConfig
    from edgeopt.tasks import LoadedModel

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_lm).eval()
    artifact, io = export_decoder(LoadedModel(model, None), ExportConfig(kv_cache="concat"), tmp_path)
    nodes = onnx.load(str(artifact.path)).graph.node
    attention = [n for n in nodes if n.op_type == "Attention"]
    assert len(attention) == io.num_layers and not io.cache_in_place
    assert not [n for n in nodes if n.domain == "com.microsoft"]
    for node in attention:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["q_num_heads"] == 4 and attrs["kv_num_heads"] == io.num_kv_heads
        layer = node_layer(node, 4)
        assert list(node.input[4:]) == [f"past_key_values.{layer}.{k}" for k in ("key", "value")]
    _assert_no_per_head_plumbing(nodes)


def _assert_no_per_head_plumbing(nodes) -> None:
    assert not [n for n in nodes if n.op_type == "Expand" and not n.name.startswith("gqa")]
    per_head = [n for n in nodes if n.op_type == "Transpose"
                and [onnx.helper.get_attribute_value(a) for a in n.attribute] == [[0, 2, 1, 3]]]
    assert not per_head
    assert not [n for n in nodes if n.op_type == "Concat" and n.input[0].startswith("past_key_values")]


def node_layer(node, past_slot: int) -> int:
    """The layer an attention node serves, from the past it reads at ``past_slot``."""
    return int(node.input[past_slot].split(".")[1])


def test_a_fold_that_changes_outputs_is_reverted(tiny_llama_lm, tmp_path, monkeypatch):
    """The export checks the folded graph on its example feeds and keeps the plain one
    when they differ (here: a fold told the wrong number of query heads)."""
    from transformers import AutoModelForCausalLM

    from edgeopt.decoder import export
    from edgeopt.recipe import ExportConfig
    from edgeopt.tasks import LoadedModel

    real = export.fold_attention
    monkeypatch.setattr(export, "fold_attention", lambda model, heads, kv: real(model, 2 * heads, kv))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_lm).eval()
    notes: dict = {}
    path = export.export_decoder(LoadedModel(model, None), ExportConfig(), tmp_path, notes)[0].path
    assert notes["attention_folded"]["reverted"]
    # The plain export: repeat_kv expands K and V in both layers.
    assert sum(n.op_type == "Expand" for n in onnx.load(str(path)).graph.node) == 4


@pytest.mark.parametrize(("family", "three_d"), [("qwen2", 2), ("qwen3", 0)])
def test_qwen_attention_folds_as_far_as_its_pattern_allows(family, three_d, tmp_path):
    """Qwen2 (biased projections) folds fully, down to an in-place cache; Qwen3
    normalizes q and k per head between the reshape and the transpose, so only its
    grouped K/V copies go and its cache concatenates. Either way the cache still
    reproduces a full recompute."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from edgeopt.decoder.export import export_decoder
    from edgeopt.recipe import ExportConfig
    from edgeopt.tasks import LoadedModel

    torch.manual_seed(0)
    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM),
                             "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[family]
    model = model_cls(config_cls(vocab_size=128, hidden_size=64, intermediate_size=128, head_dim=16,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    notes: dict = {}
    artifact, io = export_decoder(LoadedModel(model, None), ExportConfig(), tmp_path, notes)
    assert notes["attention_folded"] == {"grouped_kv": 2, "three_d": three_d, "in_place_cache": three_d}
    assert io.cache_in_place == bool(three_d)
    lm = OnnxCausalLM.from_file(artifact.path, io, threads=1)
    ids = np.arange(5, 17, dtype=np.int64)[None]
    last, past = lm.prefill(ids[0, :-1].tolist())
    step, _ = lm.step(int(ids[0, -1]), past)
    np.testing.assert_allclose(step, lm.logits(ids)[0, -1], atol=1e-5)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(lm.logits(ids)[0], ref[0], atol=1e-4)
