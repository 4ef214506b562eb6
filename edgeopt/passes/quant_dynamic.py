"""Dynamic INT8: int8 weights, activations quantized per tensor at run time."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.passes.gemm_to_matmul import gemm_to_matmul
from edgeopt.passes.outlier_split import split_outliers
from edgeopt.passes.quantize import QuantContext, quantized_op_counts, register_quantizer
from edgeopt.recipe import DynamicInt8Config


@register_quantizer(DynamicInt8Config)
def quantize_dynamic_int8(
    artifact: OnnxArtifact, config: DynamicInt8Config, workdir: Path, record: PassRecord,
    context: QuantContext,
) -> OnnxArtifact:
    """INT8 weights; activations quantized per tensor at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = ["MatMul", "Attention"]
    if config.quantize_embeddings:
        op_types += ["Gather", "EmbedLayerNormalization"]
    model = onnx.load(str(artifact.path))
    record.notes["gemm_rewritten"] = gemm_to_matmul(model)
    exclude = list(config.exclude)
    if config.outlier_threshold is not None:
        split = split_outliers(model, artifact.path, list(context.calibration),
                               config.outlier_threshold, config.outlier_max_channels)
        exclude += split.float_nodes
        record.notes["outlier_channels"] = sum(len(c) for c in split.channels.values())
        record.notes["outlier_matmuls"] = len(split.channels)
    out = workdir / "quantized.onnx"
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
    record.notes["quantized_ops"] = quantized_op_counts(out)
    return OnnxArtifact(out)
