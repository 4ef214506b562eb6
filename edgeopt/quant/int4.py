"""Weight-only INT4: block-wise MatMulNBits for MatMuls, GatherBlockQuantized for embeddings.

Symmetric round-to-nearest and GPTQ go through edgeopt's own writer
(:mod:`edgeopt.quant.nbits`), which also keeps named MatMuls at 8 bits and stores
a tied word table once; HQQ and asymmetric grids go through onnxruntime's quantizer.
Embedding tables the writer did not share are quantized to 4 bits by onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.quant.gemm_to_matmul import gemm_to_matmul
from edgeopt.quant.nbits import float_tables, write_eight_bit_tables, write_nbits
from edgeopt.quant.registry import QuantContext, quantized_op_counts, register_quantizer
from edgeopt.recipe import WeightOnlyInt4Config

# Gather tables are [vocab, hidden]: blocks run along the hidden axis (1); MatMul
# weights are [in, out]: blocks run along the input axis (0).
_AXES = (("MatMul", 0), ("Gather", 1))


@register_quantizer(WeightOnlyInt4Config)
def quantize_weight_only_int4(
    artifact: OnnxArtifact, config: WeightOnlyInt4Config, workdir: Path, record: PassRecord,
    context: QuantContext,
) -> OnnxArtifact:
    """Block-wise INT4 MatMul weights (MatMulNBits) and embeddings (GatherBlockQuantized)."""
    import onnx

    model = onnx.load(str(artifact.path))
    record.notes["gemm_rewritten"] = gemm_to_matmul(model)
    out = workdir / "quantized.onnx"
    if config.native:
        source = artifact.path
        if record.notes["gemm_rewritten"]:
            # Calibration runs the graph the writer rewrites, so its MatMul inputs exist.
            source = workdir / "matmuls.onnx"
            onnx.save(model, str(source))
        record.notes |= write_nbits(source, model, config, context.calibration)
        if config.quantize_embeddings and config.bits == 8:
            # An all-8-bit build keeps its tables at 8 bits too (onnxruntime writes 4).
            record.notes["eight_bit_tables"] = len(write_eight_bit_tables(model, config.int8_block_size))
            onnx.save(model, str(out))
        elif config.quantize_embeddings and float_tables(model):
            _ort_quantized(model, config, ("Gather",)).save_model_to_file(
                str(out), use_external_data_format=False)
        else:
            onnx.save(model, str(out))
    else:
        op_types = ("MatMul", "Gather") if config.quantize_embeddings else ("MatMul",)
        _ort_quantized(model, config, op_types).save_model_to_file(str(out), use_external_data_format=False)
    record.notes["quantized_ops"] = quantized_op_counts(out)
    return OnnxArtifact(out)


def _ort_quantized(model: Any, config: WeightOnlyInt4Config, op_types: tuple[str, ...]) -> Any:
    """onnxruntime's MatMulNBits quantizer over ``op_types`` (its ONNXModel wrapper)."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    if config.algorithm == "hqq":
        algo = mnb.HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4,
                                            op_types_to_quantize=op_types, quant_axes=_AXES)
    else:
        algo = mnb.DefaultWeightOnlyQuantConfig(
            block_size=config.block_size, is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level, op_types_to_quantize=op_types, quant_axes=_AXES)
    quantizer = mnb.MatMulNBitsQuantizer(
        model, block_size=config.block_size, is_symmetric=config.symmetric,
        accuracy_level=config.accuracy_level, op_types_to_quantize=op_types, quant_axes=_AXES,
        algo_config=algo)
    quantizer.process()
    return quantizer.model
