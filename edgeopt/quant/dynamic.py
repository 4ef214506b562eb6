"""Dynamic INT8: int8 weights, activations quantized per tensor at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.quant.gemm_to_matmul import gemm_to_matmul
from edgeopt.quant.merge_qkv import merge_qkv
from edgeopt.quant.outlier_split import activation_absmax, split_outliers
from edgeopt.quant.registry import Candidate, QuantContext, quantized_op_counts, register_quantizer
from edgeopt.quant.smooth_attention import attention_inputs, smooth_attention
from edgeopt.quant.token_scales import scale_per_token
from edgeopt.recipe import DynamicInt8Config


def dynamic_candidates(model: Any, config: DynamicInt8Config) -> list[Candidate]:
    """Every node this quantizer turns integer, one unit each (activations are quantized
    per node at run time)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    gemm_to_matmul(copy)
    if config.per_token_attention:
        merge_qkv(copy)  # the budget keeps what the quantizer will see
    inits = {t.name for t in copy.graph.initializer}
    ops = {"MatMul", "Attention"} | ({"Gather", "EmbedLayerNormalization"}
                                     if config.quantize_embeddings else set())
    units = []
    skip = set(config.exclude) | standard_attention(copy)
    for node in copy.graph.node:
        weights = [x for x in node.input[1:2] if x in inits] if node.op_type == "MatMul" else [
            x for x in node.input if x in inits]
        if node.op_type not in ops or node.name in skip or not weights:
            continue
        acts = [x for x in node.input if x and x not in inits]
        out = node.output[0].removesuffix("_matmul")  # a rewritten Gemm's MatMul
        units.append(Candidate((node.name,), tuple(acts), (out,), node.op_type))
    return units


@register_quantizer(DynamicInt8Config, candidates=dynamic_candidates)
def quantize_dynamic_int8(
    artifact: OnnxArtifact, config: DynamicInt8Config, workdir: Path, record: PassRecord,
    context: QuantContext,
) -> OnnxArtifact:
    """INT8 weights; activations quantized per tensor at run time."""
    import onnx

    op_types = ["MatMul", "Attention"]
    if config.quantize_embeddings:
        op_types += ["Gather", "EmbedLayerNormalization"]
    model = onnx.load(str(artifact.path))
    record.notes["gemm_rewritten"] = gemm_to_matmul(model)
    exclude = list(config.exclude) + sorted(standard_attention(model))
    merged: set[str] = set()
    if config.per_token_attention:
        merged = set(merge_qkv(model))
        record.notes["merged_qkv"] = len(merged)
    measured_on = artifact.path  # merging changes no activation the probes below read
    if config.smooth_attention_alpha and context.calibration:
        tensors = attention_inputs(model)
        peaks = activation_absmax(artifact.path, tensors, list(context.calibration))
        record.notes["smoothed_attention_inputs"] = smooth_attention(
            model, peaks, config.smooth_attention_alpha)
        measured_on = workdir / "smoothed-float.onnx"  # what the outlier split sees
        onnx.save(model, str(measured_on))
    if config.outlier_threshold is not None:
        split = split_outliers(model, measured_on, list(context.calibration),
                               config.outlier_threshold, config.outlier_max_channels)
        exclude += split.float_nodes
        record.notes["outlier_channels"] = sum(len(c) for c in split.channels.values())
        record.notes["outlier_matmuls"] = len(split.channels)
    out = workdir / "quantized.onnx"
    # After the outlier split a merged MatMul reads its masked input: that is the tensor
    # DynamicQuantizeLinear quantizes.
    per_token = {n.input[0] for n in model.graph.node if n.name in merged}
    record.notes["per_token_scales"] = _run(model, out, config, op_types, exclude, per_token)
    if config.min_node_sqnr_db is not None and context.calibration:
        # Judge each quantized node on exact inputs; keep the ones below the floor float.
        reference = workdir / "dynamic-float.onnx"
        onnx.save(model, str(reference))
        weak = _weak_nodes(reference, out, list(context.calibration[:4]), config.min_node_sqnr_db)
        record.notes["kept_float"] = {name: round(db, 1) for name, db in weak.items()}
        if weak:
            record.notes["per_token_scales"] = _run(onnx.load(str(reference)), out, config, op_types,
                                                    exclude + list(weak), per_token)
    record.notes["quantized_ops"] = quantized_op_counts(out)
    return OnnxArtifact(out)


def standard_attention(model: Any) -> set[str]:
    """ONNX's own Attention nodes (opset 23). onnxruntime's dynamic quantizer matches
    "Attention" by op type alone and would rewrite them as its contrib QAttention, which
    takes other inputs and attributes; they carry no weights, so they stay float."""
    return {n.name for n in model.graph.node
            if n.op_type == "Attention" and n.domain in ("", "ai.onnx")}


def _run(model: object, out: Path, config: DynamicInt8Config, op_types: list[str],
         exclude: list[str], per_token: set[str]) -> int:
    """Quantize ``model`` to ``out``; the tensors in ``per_token`` get a scale per token.
    Returns how many did."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model,
        str(out),
        op_types_to_quantize=op_types,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
        nodes_to_exclude=exclude,
        # Only constant weights: a MatMul of two activations (attention scores) would
        # need run-time quantization of both sides and loses more than it saves.
        # Fused contrib ops defeat ONNX shape inference; their outputs are float.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if not per_token:
        return 0
    quantized = onnx.load(str(out))
    done = scale_per_token(quantized, per_token)
    onnx.save(quantized, str(out))
    return done


def _weak_nodes(reference: Path, candidate: Path, feeds: list[dict], floor_db: float) -> dict[str, float]:
    """Reference-graph nodes whose quantized output SQNR on exact inputs is below ``floor_db``."""
    from edgeopt.intermediates import diagnose_onnx

    diagnosis = diagnose_onnx(reference, candidate, feeds)
    return {t.node: t.own_sqnr_db for t in diagnosis.tensors
            if t.own_sqnr_db < floor_db and t.cand_op != t.op}
