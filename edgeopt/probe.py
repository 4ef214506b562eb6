"""Probe sessions, built one way: a copy of a graph with chosen intermediate tensors
exposed as outputs, optionally with some tensors fed from outside instead of computed
(``name + REFERENCE`` inputs), run at 'basic' optimization so no fusion hides an exposed
tensor. Diagnosis, sensitivity ranking, calibration statistics and the outlier split
all read activations through this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import UsageError
from edgeopt.runtime import make_session

REFERENCE = "::reference"  # suffix of the inputs that carry values fed from outside
FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")
NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
               "tensor(float16)": np.float16, "tensor(double)": np.float64}


def probe_session(model: Any, outputs: Iterable[str], *, fed: Mapping[str, Any] | None = None,
                  save_to: Path | None = None, threads: int = 2) -> Any:
    """A session on a copy of ``model`` (an onnx.ModelProto or a path) with ``outputs``
    added as graph outputs, and every reader of a tensor in ``fed`` (name -> numpy dtype)
    reading the new graph input ``name + REFERENCE`` instead.

    Outputs are added untyped: onnxruntime infers their types (contrib ops included,
    where ONNX shape inference gives up). ``save_to`` keeps the copy on disk with its
    weights beside it (for graphs too large to pass as bytes); else it is passed in memory.
    """
    import onnx

    copy = onnx.load(str(model)) if isinstance(model, (str, Path)) else _copy(model)
    fed = dict(fed or {})
    for node in copy.graph.node:
        for i, x in enumerate(node.input):
            if x in fed:
                node.input[i] = x + REFERENCE
    for name, dtype in fed.items():
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        copy.graph.input.append(onnx.helper.make_tensor_value_info(name + REFERENCE, elem, None))
    have = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=t) for t in dict.fromkeys(outputs) if t not in have)
    if save_to is None:
        return make_session(copy.SerializeToString(), threads=threads, optimization="basic")
    onnx.save(copy, str(save_to), save_as_external_data=True, location=save_to.name + ".data")
    return make_session(save_to, threads=threads, optimization="basic")


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)  # saving moves the weights out of the proto; keep the caller's
    return out


def declared_feeds(session: Any, feeds: Mapping[str, np.ndarray], required: bool = True
                   ) -> dict[str, np.ndarray]:
    """The graph's own inputs from ``feeds``, cast to the types it declares. A missing
    one is a usage error when ``required`` (the tokenizer does not make it), else skipped."""
    out = {}
    for i in session.get_inputs():
        if i.name not in feeds:
            if required:
                raise UsageError(f"the graph needs input {i.name!r}, which the tokenizer does not "
                                 "produce; pass the tokenizer the model was compiled with")
            continue
        dtype = NUMPY_TYPES.get(i.type)
        out[i.name] = feeds[i.name] if dtype is None else feeds[i.name].astype(dtype, copy=False)
    return out
