"""onnxruntime sessions, created one way everywhere."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def make_session(
    path: Path | str | bytes,
    threads: int = 2,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    optimization: str = "all",
    spinning: bool = False,
    disabled_optimizers: Sequence[str] = (),
) -> Any:
    """An InferenceSession with a fixed intra-op thread count.

    Spinning is off except for latency benchmarks: idle spinning threads steal the cores
    the PyTorch reference or the next stage needs. ``disabled_optimizers`` names
    onnxruntime graph transformers to skip at load (the bundle's manifest lists them).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=options, providers=chosen,
                                disabled_optimizers=list(disabled_optimizers) or None)


def run_one(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run and return the first output, feeding only the inputs the graph declares."""
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence library chatter (onnxruntime's quantizer warns on the root logger)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
