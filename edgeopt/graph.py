"""Small read-only helpers over ONNX graphs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def op_counts(path: Path | str, domain: str | None = None) -> Counter[str]:
    """How many nodes of each op type the graph has (optionally one domain only)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in model.graph.node if domain is None or n.domain == domain)
