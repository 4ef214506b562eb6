"""Small read-only helpers over ONNX graphs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def op_counts(path: Path | str, domain: str | None = None) -> Counter[str]:
    """How many nodes of each op type the graph has (optionally one domain only)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node if domain is None or n.domain == domain)


def float_weight_matmuls(path: Path | str) -> list[str]:
    """Names of MatMul/Gemm nodes that still multiply by a float initializer (unquantized)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    floats = {t.name for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in floats]
