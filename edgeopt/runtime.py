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
    """Run and return the first output, feeding only the inputs the graph declares.

    A graph with a fixed ``[batch, sequence]`` input shape (made for NNAPI or QNN) gets
    the rows padded and split to that shape; its output rows are put back together.
    """
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    shape = fixed_input_shape(session)
    if shape is None or all(v.shape == shape for v in feeds.values()):
        return session.run(None, feeds)[0]
    rows = next(iter(feeds.values())).shape[0]
    outs = [session.run(None, f)[0] for f in conform_feeds([feeds], shape)]
    return np.concatenate(outs, axis=0)[:rows]


def fixed_input_shape(model: Any) -> tuple[int, int] | None:
    """The ``(batch, sequence)`` every input of a session or .onnx file is fixed to, or
    None when the graph takes dynamic shapes."""
    if isinstance(model, (str, Path)):
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        dims = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                for i in graph.input]
    else:
        dims = [[d if isinstance(d, int) else None for d in i.shape] for i in model.get_inputs()]
    shapes = {tuple(d) for d in dims}
    if len(shapes) != 1:
        return None
    (shape,) = shapes
    if len(shape) != 2 or None in shape:
        return None
    return int(shape[0]), int(shape[1])


def conform_feeds(feeds: list[dict[str, np.ndarray]], shape: tuple[int, int]
                  ) -> list[dict[str, np.ndarray]]:
    """Tokenizer feeds re-cut to a fixed ``(batch, sequence)``: right-padded with zeros
    (attention_mask 0, so padding changes no real token), split into batches of
    ``batch`` rows; a short last batch repeats its last row. Longer rows are an error:
    the graph cannot see past ``sequence`` tokens."""
    from edgeopt.errors import DataError

    batch, seq = shape
    rows: list[dict[str, np.ndarray]] = []
    for feed in feeds:
        length = next(iter(feed.values())).shape[1]
        mask = feed.get("attention_mask")
        used = int(mask.sum(axis=1).max()) if mask is not None and mask.size else length
        if used > seq:
            raise DataError(f"an input has {used} tokens but the graph is fixed to sequences of "
                            f"{seq}; truncate inputs to {seq} tokens")
        for i in range(next(iter(feed.values())).shape[0]):
            rows.append({k: np.pad(v[i : i + 1, :seq], ((0, 0), (0, max(seq - length, 0))))
                         for k, v in feed.items()})
    out = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        chunk += [chunk[-1]] * (batch - len(chunk))
        out.append({k: np.concatenate([r[k] for r in chunk], axis=0) for k in chunk[0]})
    return out


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence library chatter: onnxruntime's quantizers warn on the root logger, and its
    MatMulNBits quantizer calls ``logging.basicConfig(level=INFO)`` when first imported,
    which resets levels; a global ``logging.disable`` holds regardless."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
