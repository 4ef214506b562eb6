"""Quantization passes, one function per config type, chosen through one registry."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.errors import RecipeError
from edgeopt.graph import op_counts
from edgeopt.passes.gemm_to_matmul import gemm_to_matmul
from edgeopt.recipe import DynamicInt8Config, NoQuantConfig, WeightOnlyInt4Config
from edgeopt.runtime import quiet_logging

QuantizeFn = Callable[[OnnxArtifact, Any, Path, PassRecord], OnnxArtifact]

# Plain dict keyed by config type (torchao style); refuses duplicates.
_QUANTIZERS: dict[type, QuantizeFn] = {}


def register_quantizer(config_type: type) -> Callable[[QuantizeFn], QuantizeFn]:
    def wrap(fn: QuantizeFn) -> QuantizeFn:
        if config_type in _QUANTIZERS:
            raise ValueError(f"a quantizer for {config_type.__name__} is already registered")
        _QUANTIZERS[config_type] = fn
        return fn

    return wrap


def quantize(artifact: OnnxArtifact, config: Any, workdir: Path, record: PassRecord) -> OnnxArtifact:
    """Run the quantizer registered for ``type(config)``."""
    fn = _QUANTIZERS.get(type(config))
    if fn is None:
        raise RecipeError(f"no quantizer registered for method {getattr(config, 'method', config)!r}")
    record.config = {"method": config.method, **asdict(config)}
    with quiet_logging(), warnings.catch_warnings():
        # The quantizers' numpy code warns on all-zero blocks; the result is still exact.
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(artifact, config, workdir, record)


@register_quantizer(NoQuantConfig)
def _keep_float(artifact: OnnxArtifact, config: NoQuantConfig, workdir: Path,
                record: PassRecord) -> OnnxArtifact:
    record.notes["quantized"] = "no (fp32)"
    return artifact


@register_quantizer(DynamicInt8Config)
def quantize_dynamic_int8(
    artifact: OnnxArtifact, config: DynamicInt8Config, workdir: Path, record: PassRecord
) -> OnnxArtifact:
    """INT8 weights; activations quantized per tensor at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = ["MatMul", "Attention"]
    if config.quantize_embeddings:
        op_types += ["Gather", "EmbedLayerNormalization"]
    model = onnx.load(str(artifact.path))
    record.notes["gemm_rewritten"] = gemm_to_matmul(model)
    out = workdir / "quantized.onnx"
    quantize_dynamic(
        model,
        str(out),
        op_types_to_quantize=op_types,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8,
        nodes_to_exclude=list(config.exclude),
        # Only constant weights: a MatMul of two activations (attention scores) would
        # need run-time quantization of both sides and loses more than it saves.
        # Fused contrib ops defeat ONNX shape inference; their outputs are float.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    record.notes["quantized_ops"] = _quantized_op_counts(out)
    return OnnxArtifact(out)


@register_quantizer(WeightOnlyInt4Config)
def quantize_weight_only_int4(
    artifact: OnnxArtifact, config: WeightOnlyInt4Config, workdir: Path, record: PassRecord
) -> OnnxArtifact:
    """Block-wise INT4 MatMul weights (MatMulNBits) and embeddings (GatherBlockQuantized)."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    op_types: tuple[str, ...] = ("MatMul", "Gather") if config.quantize_embeddings else ("MatMul",)
    # Gather tables are [vocab, hidden]: blocks run along the hidden axis (1); MatMul
    # weights are [in, out]: blocks run along the input axis (0).
    axes = (("MatMul", 0), ("Gather", 1))
    if config.algorithm == "hqq":
        algo = mnb.HQQWeightOnlyQuantConfig(
            block_size=config.block_size, bits=4, op_types_to_quantize=op_types, quant_axes=axes
        )
    elif config.algorithm == "rtn":
        algo = mnb.DefaultWeightOnlyQuantConfig(
            block_size=config.block_size,
            is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level,
            op_types_to_quantize=op_types,
            quant_axes=axes,
        )
    else:
        raise RecipeError(f"quantize.algorithm {config.algorithm!r} needs calibration data and "
                          "is available for decoders only")
    model = onnx.load(str(artifact.path))
    record.notes["gemm_rewritten"] = gemm_to_matmul(model)
    quantizer = mnb.MatMulNBitsQuantizer(
        model,
        block_size=config.block_size,
        is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level,
        nodes_to_exclude=list(config.int8_nodes),
        op_types_to_quantize=op_types,
        quant_axes=axes,
        algo_config=algo,
    )
    quantizer.process()
    out = workdir / "quantized.onnx"
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    record.notes["quantized_ops"] = _quantized_op_counts(out)
    return OnnxArtifact(out)


_QUANT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLinear",
              "QEmbedLayerNormalization", "MatMulNBits", "GatherBlockQuantized",
              "QuantizeLinear", "DequantizeLinear", "MatMul", "Gemm", "Gather")


def _quantized_op_counts(path: Path) -> dict[str, int]:
    counts = op_counts(path)
    return {op: counts[op] for op in _QUANT_OPS if counts.get(op)}
