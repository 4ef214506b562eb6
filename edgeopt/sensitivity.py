"""How much error each unit of quantized nodes adds by itself, on real inputs: the
ranking an accuracy budget keeps nodes by (:mod:`edgeopt.budget`).

One reference run of the float graph and one run of the quantized graph in which every
unit's activation inputs are replaced by the reference values. Each unit's outputs then
carry only the error the unit adds: its weights *and the quantization of its inputs*.

This differs from ``edgeopt diagnose``'s own error on purpose. Diagnose feeds a QDQ
graph's nodes the reference value of their *dequantized* inputs, which charges an
activation's quantization to the node that produced it (the right picture for "where
does the error enter"). A budget must charge it to the node that reads it, because
keeping that node in higher precision is what removes it: here the reference replaces
the float tensor *before* its QuantizeLinear.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.diagnosis import ErrorStats
from edgeopt.probe import REFERENCE, declared_feeds, probe_session
from edgeopt.quant.registry import Candidate


def unit_sqnr(float_path: Path, quant_path: Path, units: list[Candidate],
              feeds: list[dict[str, np.ndarray]]) -> list[float]:
    """Per unit: the lowest SQNR (dB) among its outputs when fed exact inputs; nan when
    none of its outputs exists in both graphs."""
    import onnx

    ref_model = onnx.load(str(float_path))
    cand_model = onnx.load(str(quant_path))
    in_both = _produced(ref_model) & _produced(cand_model)
    graph_inputs = {i.name for i in cand_model.graph.input}
    outputs = sorted({t for u in units for t in u.outputs if t in in_both})
    fed = sorted({t for u in units for t in u.inputs if t in in_both and t not in graph_inputs})
    stats = {t: ErrorStats() for t in outputs}
    with tempfile.TemporaryDirectory(prefix="edgeopt-sensitivity-") as tmp:
        ref = probe_session(ref_model, [*fed, *outputs], save_to=Path(tmp) / "reference.onnx")
        isolated = None
        for feed in feeds:
            values = dict(zip([*fed, *outputs],
                              ref.run([*fed, *outputs], declared_feeds(ref, feed, required=False)),
                              strict=True))
            if isolated is None:  # the reference dtypes type the new inputs
                isolated = probe_session(cand_model, outputs, save_to=Path(tmp) / "isolated.onnx",
                                         fed={t: values[t].dtype for t in fed})
            extra = {t + REFERENCE: values[t] for t in fed}
            got = isolated.run(outputs, {**declared_feeds(isolated, feed, required=False), **extra})
            for t, value in zip(outputs, got, strict=True):
                stats[t].add(values[t], value)
    result = []
    for unit in units:
        measured = [stats[t].sqnr_db for t in unit.outputs if t in stats and stats[t].rows]
        result.append(min(measured) if measured else math.nan)
    return result


def _produced(model: Any) -> set[str]:
    return {o for n in model.graph.node for o in n.output if o}
