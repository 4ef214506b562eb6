"""Decoder parity metrics: exact for the fp32 graph, gates failing on a broken graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.reference import TorchCausalLM
from edgeopt.decoder.validate import DecoderEvalConfig, validate_decoder
from edgeopt.evaldata import builtin_sentences
from edgeopt.recipe import Gates

SMALL = DecoderEvalConfig(max_tokens=384, window=128, prompts=3, new_tokens=8, threads=1)
GATES = Gates(max_perplexity_ratio=1.01, min_token_agreement=0.99, min_prefill_cosine=0.999)


def _validate(path, io, loaded):
    text = "\n".join(builtin_sentences().texts)
    return validate_decoder(OnnxCausalLM.from_file(path, io, threads=1),
                            TorchCausalLM(loaded.model, io.eos_token_ids), loaded.tokenizer, text,
                            "built-in sentences", GATES, SMALL)


def test_fp32_graph_matches_the_original_exactly(tiny_llama_onnx):
    result = _validate(*tiny_llama_onnx)
    m = result.metrics
    assert result.passed and result.rows == 3
    assert abs(m["perplexity_ratio"] - 1.0) < 1e-5
    assert m["perplexity_reference"] > 1.0
    assert m["token_agreement"] == 1.0
    assert m["first_divergence_min"] == m["first_divergence_mean"] == 8
    assert m["prefill_cosine_min"] > 0.99999
    assert m["prefill_cosine_min"] <= m["prefill_cosine_p01"] <= m["prefill_cosine_mean"] <= 1.0 + 1e-6


def test_a_damaged_graph_fails_its_gates(tiny_llama_onnx, tmp_path):
    path, io, loaded = tiny_llama_onnx
    model = onnx.load(str(path))
    # Scale every down_proj weight: the graph runs, the model is no longer the same.
    downs = {n.input[1] for n in model.graph.node if "down_proj" in n.name}
    for t in model.graph.initializer:
        if t.name in downs:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 8.0, t.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    result = _validate(broken, io, loaded)
    assert not result.passed
    failed = {c.metric for c in result.checks if c.passed is False}
    assert {"token_agreement", "prefill_cosine_min"} <= failed
    # Random weights: damage moves perplexity, but not necessarily upwards.
    assert abs(result.metrics["perplexity_ratio"] - 1.0) > 1e-3
    assert np.isfinite(result.metrics["perplexity"])
    assert result.metrics["first_divergence_min"] < 8
