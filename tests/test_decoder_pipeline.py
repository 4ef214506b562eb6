"""The whole decoder compile on tiny random models: bundle, manifest io, report, the
bundle generating on its own, the CLI, and a failed gate leaving only the report.
"""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from helpers import nbits_projections

import edgeopt
from edgeopt.bundle import read_manifest
from edgeopt.cli import cli
from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.io import DecoderIO
from edgeopt.decoder.validate import DecoderEvalConfig
from edgeopt.errors import ParityError
from edgeopt.graph import op_counts
from edgeopt.recipe import BenchConfig, Recipe, WeightOnlyInt4Config

SMALL_EVAL = DecoderEvalConfig(max_tokens=256, window=128, prompts=2, new_tokens=6)


def _recipe(**gates):
    recipe = Recipe(name="tiny-int4", description="test",
                    quantize=WeightOnlyInt4Config(block_size=32),
                    bench=BenchConfig(seq_len=16, decode_tokens=4, warmup=1, repeats=3,
                                      torch_baseline=False))
    return recipe.with_gates("text-generation", **gates) if gates else recipe


@pytest.fixture(scope="module")
def int4_bundle(tiny_llama_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("dec") / "bundle"
    report = edgeopt.compile(str(tiny_llama_lm), recipe=_recipe(), out=out, decoder_eval=SMALL_EVAL)
    return out, report


def test_bundle_manifest_names_every_cache_input_and_output(int4_bundle):
    out, report = int4_bundle
    assert report.passed and report.task == "text-generation"
    assert [p["name"] for p in report.passes] == ["load", "export", "quantize", "validate",
                                                   "benchmark"]
    manifest = read_manifest(out)  # hashes verified
    io = DecoderIO.from_dict(manifest["decoder"])
    assert (io.num_layers, io.num_kv_heads, io.head_dim) == (2, 2, 16)
    graph_inputs = [i["name"] for i in manifest["inputs"]]
    graph_outputs = [o["name"] for o in manifest["outputs"]]
    assert graph_inputs == [i["name"] for i in manifest["decoder"]["inputs"]] == io.input_names
    assert graph_outputs == [o["name"] for o in manifest["decoder"]["outputs"]] == io.output_names
    assert "past_key_values.1.value" in graph_inputs and "present.1.value" in graph_outputs
    assert {"model.onnx", "tokenizer.json", "report.json"} <= set(manifest["files"])
    assert len(nbits_projections(out / "model.onnx")) == 15  # 7 per layer + lm_head


def test_report_has_decoder_metrics_and_throughput(int4_bundle):
    _, report = int4_bundle
    metrics = report.parity["metrics"]
    assert set(metrics) == {"perplexity_reference", "perplexity", "perplexity_ratio",
                            "token_agreement", "first_divergence_mean", "first_divergence_min",
                            "prefill_cosine_min", "prefill_cosine_p01", "prefill_cosine_mean"}
    assert 0.0 <= metrics["token_agreement"] <= 1.0
    throughput = report.bench["throughput"]
    assert set(throughput) == {"edgeopt tiny-int4", "onnx-fp32"}
    for row in throughput.values():
        assert row["decode_tokens_per_s"] > 0 and row["peak_rss_mb"] > row["model_rss_mb"] > 0
    assert report.sizes["bundle model.onnx"] < report.sizes["onnx fp32"]
    assert "prefill tok/s" in report.to_markdown()


def test_memory_profile_accounts_for_the_probe_process(int4_bundle):
    out, report = int4_bundle
    io = DecoderIO.from_dict(read_manifest(out)["decoder"])
    config = report.bench["config"]
    capacity = config["input_shape"][1] + config["decode_tokens"]
    # K and V per layer, [1, kv_heads, capacity, head_dim] float32: what the probe allocated.
    cache_mb = 2 * io.num_layers * io.num_kv_heads * capacity * io.head_dim * 4 / 1e6
    for row in report.bench["throughput"].values():
        prof = row["memory_profile_mb"]
        assert prof["kv_cache"] == pytest.approx(cache_mb)
        assert prof["tokenizer"] > 0 and prof["session"] > 0 and prof["runtime"] > 0
        parts = prof["runtime"] + prof["tokenizer"] + prof["session"] + prof["kv_cache"] + prof["arena"]
        assert parts >= prof["final_rss"] - 1e-6  # the arena is what is left, never negative
        assert row["peak_rss_mb"] >= max(prof["final_rss"], prof["load_peak"]) - 1e-6
    assert "Where the memory goes" in report.to_markdown() and "| KV cache |" in report.to_markdown()


def test_bundle_generates_from_its_own_files(int4_bundle):
    out, _ = int4_bundle
    lm = OnnxCausalLM.from_bundle(out, threads=1)
    ids = lm.tokenizer("The battery lasts")["input_ids"]
    greedy = lm.generate(ids, 6, stop_at_eos=False)
    assert len(greedy) == 6
    result = CliRunner().invoke(cli, ["generate", str(out), "The battery lasts",
                                      "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("The battery lasts")
    sampled = CliRunner().invoke(cli, ["generate", str(out), "Hi", "--top-k", "5"])
    assert sampled.exit_code == 2 and "--temperature" in sampled.output


def test_failed_gate_raises_and_keeps_only_the_report(tiny_gpt2_lm, tmp_path):
    out = tmp_path / "b"
    # INT4 on random weights cannot keep every greedy token nor a ratio of exactly 1.
    recipe = _recipe(max_perplexity_ratio=1.0, min_token_agreement=1.0)
    with pytest.raises(ParityError) as info:
        edgeopt.compile(str(tiny_gpt2_lm), recipe=recipe, out=out, decoder_eval=SMALL_EVAL)
    failures = info.value.failures
    assert any("perplexity_ratio" in f for f in failures)
    assert any("token_agreement" in f for f in failures)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["status"] == "FAILED"


def test_gptq_calibrates_on_text_the_perplexity_never_scores(tiny_llama_lm, tmp_path):
    from edgeopt.evaldata import builtin_sentences

    text = tmp_path / "eval.txt"
    text.write_text("\n".join(builtin_sentences().texts * 6))
    recipe = Recipe(name="tiny-gptq", description="test",
                    quantize=WeightOnlyInt4Config(block_size=32, algorithm="gptq"),
                    bench=BenchConfig(seq_len=16, decode_tokens=4, warmup=1, repeats=3,
                                      torch_baseline=False))
    report = edgeopt.compile(str(tiny_llama_lm), recipe=recipe, out=tmp_path / "a", eval_data=text,
                             decoder_eval=SMALL_EVAL)
    notes = next(p["notes"] for p in report.passes if p["name"] == "quantize")
    assert notes["calibration"] == f"eval text after token {SMALL_EVAL.max_tokens}"
    assert notes["data_aware_nodes"] == 15 and notes["calibration_sequences"] >= 1
    own = tmp_path / "calib.txt"
    own.write_text("A different text to calibrate on, long enough for a few sequences. " * 40)
    report = edgeopt.compile(str(tiny_llama_lm), recipe=recipe, out=tmp_path / "b", eval_data=text,
                             calibration_data=own, decoder_eval=SMALL_EVAL)
    notes = next(p["notes"] for p in report.passes if p["name"] == "quantize")
    assert notes["calibration"] == "calib.txt"


def test_x86_int8_gives_a_decoder_8_bit_weights_and_one_shared_table(tiny_llama_lm, tmp_path):
    import dataclasses

    from edgeopt.targets import load_target

    recipe = dataclasses.replace(load_target("x86-int8"), bench=BenchConfig(
        seq_len=16, decode_tokens=4, warmup=1, repeats=3, torch_baseline=False))
    report = edgeopt.compile(str(tiny_llama_lm), recipe=recipe, out=tmp_path / "b",
                             decoder_eval=SMALL_EVAL, fail_on_parity=False)
    graph = onnx.load(str(tmp_path / "b" / "model.onnx")).graph
    bits = nbits_projections(tmp_path / "b" / "model.onnx")
    # Every weight MatMul (7 per layer and the head) is 8-bit weight-only, not dynamic INT8
    # (decoder_quantize), and the tied word table is the head's codes.
    assert len(bits) == 15 and op_counts(tmp_path / "b" / "model.onnx").get("MatMulInteger", 0) == 0
    assert set(bits.values()) == {8}
    assert [n.op_type for n in graph.node].count("GatherBlockQuantized") == 1
    assert report.parity["metrics"]["perplexity_ratio"] < 1.01
    assert report.to_dict()["recipe"]["decoder_quantize"]["bits"] == 8


def test_arm64_int4_fast_gives_every_projection_4_bits_at_block_64(tiny_llama_lm, tmp_path):
    import dataclasses

    from edgeopt.targets import load_target

    recipe = dataclasses.replace(load_target("arm64-int4-fast"), bench=BenchConfig(
        seq_len=16, decode_tokens=4, warmup=1, repeats=3, torch_baseline=False))
    report = edgeopt.compile(str(tiny_llama_lm), recipe=recipe, out=tmp_path / "b",
                             decoder_eval=SMALL_EVAL, fail_on_parity=False)
    model = tmp_path / "b" / "model.onnx"
    graph = onnx.load(str(model)).graph
    bits = nbits_projections(model)
    # The fast end: nothing is kept at 8 bits, the head included, and every kernel reads
    # 64-wide blocks; with a 4-bit head the tied table is its own 4-bit lookup.
    assert len(bits) == 15 and set(bits.values()) == {4}
    blocks = {onnx.helper.get_attribute_value(a) for n in graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "block_size"}
    assert blocks == {64}
    lookups = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    tables = {t.name: t.data_type for t in graph.initializer}
    assert len(lookups) == 1
    assert tables[lookups[0].input[0]] in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    notes = next(p["notes"] for p in report.passes if p["name"] == "quantize")
    assert notes["data_aware_nodes"] == 15  # GPTQ (with the scale search) on every projection
