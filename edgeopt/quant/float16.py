"""fp16: weights and compute in half precision, graph inputs and outputs kept fp32.

onnxruntime's ``convert_float_to_float16`` does the rewrite; its default block list keeps
the ops whose fp16 kernels lose too much (or do not exist) in fp32, with Casts around
them. On the CPU provider onnxruntime inserts Casts of its own wherever it has no fp16
kernel, so a CPU session checks the fp16 weights' rounding, not the GPU's arithmetic.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.quant.registry import QuantContext, register_quantizer
from edgeopt.recipe import Float16Config


@register_quantizer(Float16Config)
def quantize_float16(artifact: OnnxArtifact, config: Float16Config, workdir: Path,
                     record: PassRecord, _context: QuantContext) -> OnnxArtifact:
    """fp16 initializers and activations; fp32 at the graph's edges when asked."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(artifact.path))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.keep_fp32_ops))
    converted = convert_float_to_float16(model, keep_io_types=config.keep_io_types,
                                         op_block_list=block)
    out = workdir / "fp16.onnx"
    onnx.save(converted, str(out))
    inits = converted.graph.initializer
    record.notes["fp16_initializers"] = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in inits)
    record.notes["fp32_initializers"] = sum(t.data_type == onnx.TensorProto.FLOAT for t in inits)
    record.notes["io_types"] = "fp32" if config.keep_io_types else "fp16"
    return OnnxArtifact(out)
