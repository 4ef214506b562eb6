"""Weight-only INT4: block-wise MatMulNBits for MatMuls, GatherBlockQuantized for embeddings."""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.errors import RecipeError
from edgeopt.passes.gemm_to_matmul import gemm_to_matmul
from edgeopt.passes.quantize import QuantContext, quantized_op_counts, register_quantizer
from edgeopt.recipe import WeightOnlyInt4Config


@register_quantizer(WeightOnlyInt4Config)
def quantize_weight_only_int4(
    artifact: OnnxArtifact, config: WeightOnlyInt4Config, workdir: Path, record: PassRecord,
    context: QuantContext,
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
    record.notes["quantized_ops"] = quantized_op_counts(out)
    return OnnxArtifact(out)
