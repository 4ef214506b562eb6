"""INT4 weight-only quantization of decoder graphs: every projection and the (untied)
lm_head become MatMulNBits, no float weight MatMul remains, and the cache still works.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from helpers import nbits_projections
from onnx import numpy_helper

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.untie import untie_lm_head
from edgeopt.graph import float_weight_matmuls, op_counts
from edgeopt.quant.registry import quantize
from edgeopt.recipe import WeightOnlyInt4Config


def _int4(path, tmp_path):
    record = PassRecord("quantize", {})
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, record)
    return quantize(untied, WeightOnlyInt4Config(block_size=32), tmp_path, record), record


@pytest.mark.parametrize(("fixture", "projections", "tables"), [
    ("tiny_llama_onnx", 7, 1),  # q, k, v, o, gate, up, down; one tied word table
    ("tiny_gpt2_onnx", 4, 2),  # c_attn, attn c_proj, c_fc, mlp c_proj (Gemm); wte and wpe
])
def test_int4_covers_every_projection_and_the_lm_head(fixture, projections, tables, request,
                                                      tmp_path):
    path, io, loaded = request.getfixturevalue(fixture)
    quantized, record = _int4(path, tmp_path)
    counts = op_counts(quantized.path)
    members = nbits_projections(quantized.path)
    assert len(members) == projections * io.num_layers + 1  # + lm_head
    if fixture == "tiny_llama_onnx":  # q/k/v and gate/up read one input: one kernel each
        assert counts["MatMulNBits"] == 4 * io.num_layers + 1 and counts["Split"] == 2 * io.num_layers
    assert counts["GatherBlockQuantized"] == tables
    assert counts.get("Gemm", 0) == 0
    assert float_weight_matmuls(quantized.path) == []
    assert record.notes["untied"] == "lm_head/MatMul"
    # Still one graph for prefill and decode: a cached step matches the full recompute.
    lm = OnnxCausalLM.from_file(quantized.path, io, threads=1)
    ids = np.arange(3, 11, dtype=np.int64)[None]
    full = lm.logits(ids)
    last, past = lm.prefill(ids[0, :-1].tolist())
    step, _ = lm.step(int(ids[0, -1]), past)
    np.testing.assert_allclose(step, full[0, -1], atol=1e-4)


def test_untie_gives_the_head_its_own_weight_and_keeps_the_input(tiny_llama_onnx, tmp_path):
    path, io, _ = tiny_llama_onnx
    before = path.read_bytes()
    record = PassRecord("untie", {})
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, record)
    assert untied.path != path and path.read_bytes() == before
    graph = onnx.load(str(untied.path)).graph
    head = next(n for n in graph.node if n.name == "lm_head/MatMul")
    inits = {t.name: t for t in graph.initializer}
    assert head.input[1] in inits and list(inits[head.input[1]].dims)[::-1] == [io.vocab_size, 64]
    ids = np.arange(5, 15, dtype=np.int64)[None]
    tied_logits = OnnxCausalLM.from_file(path, io).logits(ids)
    np.testing.assert_array_equal(OnnxCausalLM.from_file(untied.path, io).logits(ids), tied_logits)
    again = untie_lm_head(untied, tmp_path / "..", PassRecord("untie", {}))
    assert again.path == untied.path  # nothing left to untie: the input artifact comes back


def _calibration(io, rows=2, length=12):
    from edgeopt.decoder.evaltext import calibration_feeds

    class Chars:  # a tokenizer stand-in: one token per character, ids inside the tiny vocab
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [3 + ord(c) % 90 for c in text]}

    return tuple(calibration_feeds(Chars(), io, "the quick brown fox jumps over it " * 4, rows, length))


def test_gptq_keeps_named_projections_at_8_bits_and_stores_a_tied_table_once(tiny_llama_onnx, tmp_path):
    from edgeopt.quant.registry import QuantContext

    path, io, _ = tiny_llama_onnx
    record = PassRecord("quantize", {})
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, record)
    config = WeightOnlyInt4Config(block_size=32, algorithm="gptq", share_embedding=True,
                                  int8_nodes=("lm_head*", "*mlp.down_proj*", "*mlp.up_proj*"))
    quantized = quantize(untied, config, tmp_path, record, QuantContext(calibration=_calibration(io)))
    graph = onnx.load(str(quantized.path)).graph
    bits = nbits_projections(quantized.path)
    eights = {name for name, b in bits.items() if b == 8}
    # up_proj (8-bit) shares its input with gate_proj (4-bit, data-aware).
    mlp = {f"model.layers.{i}.mlp.{p}/MatMulNBits"
           for i in range(io.num_layers) for p in ("down_proj", "up_proj")}
    assert eights == {"lm_head/MatMulNBits"} | mlp
    assert len(bits) == 7 * io.num_layers + 1 and float_weight_matmuls(quantized.path) == []
    assert record.notes["data_aware_nodes"] == 5 * io.num_layers
    assert record.notes["int8_nodes"] == {"lm_head/MatMul": 1, "model.layers.*.mlp.down_proj/MatMul": 2,
                                          "model.layers.*.mlp.up_proj/MatMul": 2}
    # The word table is the head's 8-bit codes, read through a Reshape: no table of its own.
    lookup = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph.node if n.name == "lm_head/MatMulNBits")
    reshape = next(n for n in graph.node if lookup.input[0] in n.output)
    assert reshape.op_type == "Reshape" and reshape.input[0] == head.input[1]
    assert lookup.input[2] == head.input[2]
    tables = {(io.vocab_size, 64), (64, io.vocab_size)}
    assert not [t.name for t in graph.initializer
                if tuple(t.dims) in tables and t.data_type != onnx.TensorProto.UINT8]
    lm = OnnxCausalLM.from_file(quantized.path, io, threads=1)
    ids = np.arange(3, 11, dtype=np.int64)[None]
    last, past = lm.prefill(ids[0, :-1].tolist())
    step, _ = lm.step(int(ids[0, -1]), past)
    np.testing.assert_allclose(step, lm.logits(ids)[0, -1], atol=1e-4)


@pytest.mark.parametrize(("largest", "expected"), [(128, {64, 128}), (32, {32})])
def test_8_bit_blocks_are_the_largest_dividing_k_up_to_int8_block_size(tiny_llama_onnx, tmp_path,
                                                                       largest, expected):
    path, io, _ = tiny_llama_onnx
    record = PassRecord("quantize", {})
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, record)
    config = WeightOnlyInt4Config(bits=8, int8_block_size=largest, share_embedding=True)
    quantized = quantize(untied, config, tmp_path, record)
    graph = onnx.load(str(quantized.path)).graph
    blocks = {n.op_type: set() for n in graph.node}
    for n in graph.node:
        for a in n.attribute:
            if a.name == "block_size":
                blocks[n.op_type].add(onnx.helper.get_attribute_value(a))
    # The tiny Llama's K is 64 (hidden) or 128 (MLP's down): blocks of 64 and 128 by
    # default; capped at 32, every product and the shared lookup read blocks of 32.
    assert blocks["MatMulNBits"] == expected
    assert blocks["GatherBlockQuantized"] == ({64} if largest == 128 else {32})
    lm = OnnxCausalLM.from_file(quantized.path, io, threads=1)
    ids = np.arange(3, 11, dtype=np.int64)[None]
    last, past = lm.prefill(ids[0, :-1].tolist())
    step, _ = lm.step(int(ids[0, -1]), past)
    np.testing.assert_allclose(step, lm.logits(ids)[0, -1], atol=1e-4)


def test_gptq_without_calibration_rows_is_a_data_error(tiny_llama_onnx, tmp_path):
    from edgeopt.errors import DataError

    path, _, _ = tiny_llama_onnx
    record = PassRecord("quantize", {})
    with pytest.raises(DataError, match="calibration"):
        quantize(OnnxArtifact(path), WeightOnlyInt4Config(algorithm="gptq"), tmp_path, record)


def test_merged_projections_give_the_same_logits_bit_for_bit(tiny_llama_onnx, tmp_path, monkeypatch):
    from edgeopt.quant import nbits as quant_nbits

    path, io, _ = tiny_llama_onnx
    (tmp_path / "merged").mkdir()
    (tmp_path / "separate").mkdir()
    merged = _int4(path, tmp_path / "merged")[0]
    monkeypatch.setattr(quant_nbits, "fuse_siblings", lambda graph: [])
    separate = _int4(path, tmp_path / "separate")[0]
    assert op_counts(merged.path)["MatMulNBits"] < op_counts(separate.path)["MatMulNBits"]
    ids = np.arange(3, 19, dtype=np.int64)[None]
    np.testing.assert_array_equal(OnnxCausalLM.from_file(merged.path, io, threads=1).logits(ids),
                                  OnnxCausalLM.from_file(separate.path, io, threads=1).logits(ids))


def test_smoothing_finds_every_down_projection_and_keeps_the_float_logits(tiny_llama_onnx, tmp_path):
    from edgeopt.quant.input_stats import input_stats
    from edgeopt.quant.smooth_act import apply_smoothing, smoothable

    path, io, _ = tiny_llama_onnx
    model = onnx.load(str(path))
    pairs = smoothable(model)
    assert sorted(p.down for p in pairs) == sorted(
        f"model.layers.{i}.mlp.down_proj/MatMul" for i in range(io.num_layers))
    absmax = input_stats(path, [], [p.activation for p in pairs], _calibration(io)).absmax
    scales = apply_smoothing(model, pairs, absmax, alpha=0.5)
    assert min(float(np.abs(s - 1).max()) for s in scales.values()) > 0.05  # weights really moved
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(model, str(smoothed))
    ids = np.arange(3, 19, dtype=np.int64)[None]
    np.testing.assert_allclose(OnnxCausalLM.from_file(smoothed, io, threads=1).logits(ids),
                               OnnxCausalLM.from_file(path, io, threads=1).logits(ids),
                               rtol=1e-4, atol=1e-4)


def test_smoothing_is_recorded_and_needs_calibration_rows(tiny_llama_onnx, tmp_path):
    from edgeopt.errors import DataError
    from edgeopt.quant.registry import QuantContext

    path, io, _ = tiny_llama_onnx
    config = WeightOnlyInt4Config(block_size=32, smooth_alpha=0.5)
    record = PassRecord("quantize", {})
    quantize(OnnxArtifact(path), config, tmp_path, record, QuantContext(calibration=_calibration(io)))
    note = record.notes["smoothed"]
    assert note["inputs"] == io.num_layers
    before, after = note["peak_over_median"]
    assert after < before
    with pytest.raises(DataError, match="smooth_alpha needs calibration"):
        quantize(OnnxArtifact(path), config, tmp_path / "again", PassRecord("quantize", {}))


def test_scale_search_folds_into_norms_and_values_and_keeps_the_float_logits(tiny_llama_onnx, tmp_path,
                                                                           monkeypatch):
    from edgeopt.quant import scale_search
    from edgeopt.quant.input_stats import input_stats

    path, io, _ = tiny_llama_onnx
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, PassRecord("untie", {}))
    model = onnx.load(str(untied.path))
    groups = scale_search.scale_groups(model)
    # Per layer: q/k/v after the input norm, gate/up after the second norm, o after
    # attention (GQA: 4 query heads over 2 KV heads); then the head after the final norm.
    by_size = sorted(len(g.matmuls) for g in groups)
    assert by_size == [1] * (io.num_layers + 1) + [2] * io.num_layers + [3] * io.num_layers
    values = [g for g in groups if g.kv_heads]
    assert len(values) == io.num_layers and {(g.kv_heads, g.repeat) for g in values} == {(2, 2)}
    moments = input_stats(untied.path, [g.activation for g in groups], [], _calibration(io)).moments
    layout = {m: (4, 32) for g in groups for m in g.matmuls}
    before = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    monkeypatch.setattr(scale_search, "ALPHAS", np.array([1.0]))  # every group moves
    moved = scale_search.search_scales(model, groups, moments, layout)
    assert len(moved) == len(groups)
    for g in values:  # the value columns really took 1/s
        after = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == g.fold))
        assert not np.allclose(after, before[g.fold])
    scaled = tmp_path / "scaled.onnx"
    onnx.save(model, str(scaled))
    ids = np.arange(3, 19, dtype=np.int64)[None]
    np.testing.assert_allclose(OnnxCausalLM.from_file(scaled, io, threads=1).logits(ids),
                               OnnxCausalLM.from_file(untied.path, io, threads=1).logits(ids),
                               rtol=1e-4, atol=1e-4)


def test_scale_search_is_recorded_and_needs_calibration_rows(tiny_llama_onnx, tmp_path):
    from edgeopt.errors import DataError
    from edgeopt.quant.registry import QuantContext

    path, io, _ = tiny_llama_onnx
    config = WeightOnlyInt4Config(block_size=32, scale_search=True)
    record = PassRecord("quantize", {})
    quantize(OnnxArtifact(path), config, tmp_path, record, QuantContext(calibration=_calibration(io)))
    note = record.notes["scale_search"]
    assert note["groups"] == 3 * io.num_layers  # the head reads a Transpose here: not its own weight
    assert 0 < note["scaled"] <= note["groups"] and note["error_ratio_median"] < 1.0
    with pytest.raises(DataError, match="scale_search needs calibration"):
        quantize(OnnxArtifact(path), config, tmp_path / "again", PassRecord("quantize", {}))


def test_group_smoothing_reaches_a_tied_head_and_its_lookup_divides_it_back(tiny_llama_onnx, tmp_path):
    from edgeopt.quant.registry import QuantContext

    path, io, _ = tiny_llama_onnx
    untied = untie_lm_head(OnnxArtifact(path), tmp_path, PassRecord("untie", {}))
    config = WeightOnlyInt4Config(bits=8, share_embedding=True, smooth_alpha=0.5, smooth_groups=True)
    record = PassRecord("quantize", {})
    out = quantize(untied, config, tmp_path, record, QuantContext(calibration=_calibration(io)))
    # Per layer the down projection, q/k/v, gate/up and o; then the head after the final norm.
    assert record.notes["smoothed"]["inputs"] == 4 * io.num_layers + 1
    assert record.notes["shared_embedding"]
    model = onnx.load(str(out.path))
    assert op_counts(out.path)["GatherBlockQuantized"] == 1
    unsmooth = [n for n in model.graph.node if n.name.endswith("/Unsmooth")]
    assert len(unsmooth) == 1

    ids = np.arange(3, 19, dtype=np.int64)[None]
    reference = OnnxCausalLM.from_file(untied.path, io, threads=1).logits(ids)
    lm = OnnxCausalLM.from_file(out.path, io, threads=1)
    error = float(np.abs(lm.logits(ids) - reference).max() / np.abs(reference).max())
    last, past = lm.prefill(ids[0, :-1].tolist())
    step, _ = lm.step(int(ids[0, -1]), past)
    np.testing.assert_allclose(step, lm.logits(ids)[0, -1], atol=1e-4)
    # Without the division the lookup returns the smoothed rows: the logits move far.
    mul = unsmooth[0]
    for node in model.graph.node:
        node.input[:] = [mul.input[0] if i == mul.output[0] else i for i in node.input]
    model.graph.node.remove(mul)
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    wrong = float(np.abs(OnnxCausalLM.from_file(broken, io, threads=1).logits(ids) - reference).max()
                  / np.abs(reference).max())
    plain = quantize(untied, dataclasses.replace(config, smooth_groups=False), tmp_path / "plain",
                     PassRecord("quantize", {}), QuantContext(calibration=_calibration(io)))
    base = float(np.abs(OnnxCausalLM.from_file(plain.path, io, threads=1).logits(ids) - reference).max()
                 / np.abs(reference).max())
    assert error < 2 * base and wrong > 5 * error, (base, error, wrong)
