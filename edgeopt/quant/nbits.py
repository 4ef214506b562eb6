"""edgeopt's own MatMulNBits writer: symmetric 4-bit weights (round to nearest, or GPTQ
with scales searched on calibration data), 8-bit weights for the MatMuls a recipe names,
and a tied word table stored once; MatMulNBits that share an input are then merged
(:mod:`edgeopt.quant.nbits_fuse`).

Every MatMul whose second input is a float initializer becomes ``MatMulNBits(x, B,
scales)`` with the codes from :mod:`edgeopt.quant.blockquant`. 8-bit MatMuls take the
largest block dividing K up to ``int8_block_size`` (no stored padding); 4-bit ones the
recipe's block.

A tied embedding and LM head (same table) are stored once when the head is 8-bit: the
embedding becomes ``GatherBlockQuantized`` over the head's own ``B`` reshaped to
``[vocab, hidden]``. Both read unsigned 8-bit codes with zero point 128 and one scale
per (row, block), so the lookup sees exactly the head's quantized rows.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import DataError
from edgeopt.graph import drop_unused
from edgeopt.quant.blockquant import block_for, pack, quantize_weight
from edgeopt.quant.input_stats import input_stats
from edgeopt.quant.nbits_fuse import fuse_siblings
from edgeopt.quant.scale_search import ScaleGroup, scale_groups, search_scales
from edgeopt.quant.smooth_act import apply_smoothing, peak_ratio, smooth_groups, smoothable, smoothed_moments
from edgeopt.recipe import WeightOnlyInt4Config

_FLOAT = 1  # onnx.TensorProto.FLOAT, without importing onnx at module load


@dataclass(frozen=True)
class WeightPlan:
    """One weight MatMul and how it is quantized."""

    node: str
    weight: str
    bits: int
    block: int
    data_aware: bool


def plan_weights(model: Any, config: WeightOnlyInt4Config) -> list[WeightPlan]:
    """Which MatMuls become MatMulNBits, at how many bits and which block."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    plans = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        if len(init.dims) != 2 or numpy_helper.to_array(init).dtype != np.float32:
            continue
        k = int(init.dims[0])
        aware = config.algorithm == "gptq"
        if config.bits == 8 or is_int8_node(node.name, config.int8_nodes):
            plans.append(WeightPlan(node.name, node.input[1], 8, block_for(k, config.int8_block_size),
                                    aware and config.bits == 8))
        else:
            plans.append(WeightPlan(node.name, node.input[1], 4, config.block_size, aware))
    return plans


def is_int8_node(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` is one of ``patterns`` (exact names or shell-style patterns)."""
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def write_nbits(source: Path, model: Any, config: WeightOnlyInt4Config,
                calibration: tuple[dict[str, np.ndarray], ...]) -> dict[str, Any]:
    """Quantize ``model`` (loaded from ``source``, which calibration runs) in place per
    ``config``; returns notes for the pass record (bits per node, what was shared)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    plans = plan_weights(model, config)
    inputs = {n.name: n.input[0] for n in graph.node if n.input}
    aware = [p for p in plans if p.data_aware]
    # Smoothing only pays where the kernel rounds activations to int8 (accuracy level 4).
    pairs = smoothable(model) if config.smooth_alpha > 0 and config.accuracy_level == 4 else []
    groups = scale_groups(model) if config.scale_search else []
    # Which word tables a head transposes, found before smoothing scales the head's rows.
    ties = _tied_tables(model) if config.share_embedding else {}
    smoothed_groups = (_eight_bit_groups(model, plans)
                       if config.smooth_groups and config.accuracy_level == 4 else [])
    if (aware or pairs or groups or smoothed_groups) and not calibration:
        needs = ("algorithm gptq" if aware else "smooth_alpha" if pairs or smoothed_groups
                 else "scale_search")
        raise DataError(f"quantize.{needs} needs calibration rows; pass --calibration-data "
                        "FILE or eval data")
    stats = input_stats(source, sorted({inputs[p.node] for p in aware} | {g.activation for g in groups}),
                        [p.activation for p in pairs] + [g.activation for g in smoothed_groups],
                        calibration)
    moments = stats.moments
    smoothing = apply_smoothing(model, pairs, stats.absmax, config.smooth_alpha)
    smoothing |= smooth_groups(model, smoothed_groups, stats.absmax, config.smooth_alpha)
    for tensor, s in smoothing.items():
        if tensor in moments:  # GPTQ must weigh the smoothed inputs the down weights now see
            moments[tensor] = smoothed_moments(moments[tensor], s)
    # After smoothing, which scales the up projection's columns; these scale rows.
    scaled = search_scales(model, groups, moments, {p.node: (p.bits, p.block) for p in plans})
    inits = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    written: dict[str, tuple[str, str, WeightPlan, int, int]] = {}
    for plan in plans:
        node = nodes[plan.node]
        b = numpy_helper.to_array(inits[plan.weight])  # [K, N]
        k, n = b.shape
        q, scales = quantize_weight(np.ascontiguousarray(b.T), plan.bits, plan.block,
                                    moments[inputs[plan.node]] if plan.data_aware else None)
        stem = plan.node.replace("/", "_")
        data, scale_name = f"{stem}.B{plan.bits}", f"{stem}.scales"
        graph.initializer.extend([numpy_helper.from_array(pack(q, plan.bits), data),
                                  numpy_helper.from_array(scales, scale_name)])
        attrs: dict[str, Any] = {"K": k, "N": n, "bits": plan.bits, "block_size": plan.block,
                                 "accuracy_level": config.accuracy_level}
        node.CopyFrom(helper.make_node("MatMulNBits", [node.input[0], data, scale_name],
                                       list(node.output), name=f"{plan.node}NBits",
                                       domain="com.microsoft", **attrs))
        written[plan.weight] = (data, scale_name, plan, k, n)
    head_scales = {w: smoothing[g.activation] for g in smoothed_groups for w in g.weights}
    shared = _share_tied_table(graph, inits, written, ties, head_scales)
    fused = fuse_siblings(graph)  # after sharing: it renames the B of what it merges
    drop_unused(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    bits = {p.node: p.bits for p in plans}
    return {"bits": {"4": sum(v == 4 for v in bits.values()), "8": sum(v == 8 for v in bits.values())},
            "int8_nodes": _by_kind(k for k, v in bits.items() if v == 8),
            "data_aware_nodes": len(aware),
            "calibration_feeds": len(calibration) if aware or pairs or groups or smoothed_groups else 0,
            "smoothed": _smoothing_note(smoothing, stats.absmax),
            "scale_search": _scale_note(groups, scaled),
            "shared_embedding": shared,
            "merged_matmuls": {"groups": len(fused), "first": fused[0] if fused else []}}


def _eight_bit_groups(model: Any, plans: list[WeightPlan]) -> list[ScaleGroup]:
    """Groups (:func:`scale_groups`) whose MatMuls are all 8-bit."""
    eight = {p.node for p in plans if p.bits == 8}
    return [g for g in scale_groups(model) if all(m in eight for m in g.matmuls)]


def _tied_tables(model: Any) -> dict[str, str]:
    """``{Gather node name: MatMul weight}`` for each 2-D word table that a MatMul weight
    holds transposed (a tied LM head)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    weights = {n.input[1] for n in model.graph.node
               if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2}
    ties = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits or len(inits[node.input[0]].dims) != 2:
            continue
        table = numpy_helper.to_array(inits[node.input[0]])
        match = next((w for w in sorted(weights) if tuple(inits[w].dims) == table.shape[::-1]
                      and np.array_equal(table, numpy_helper.to_array(inits[w]).T)), None)
        if match is not None:
            ties[node.name or f"Gather#{index}"] = match
    return ties


def _by_kind(names: Iterable[str]) -> dict[str, int]:
    """``{name with layer indices as *: how many}``: 151 node names read as 6 lines."""
    kinds: dict[str, int] = {}
    for name in sorted(names):
        kind = re.sub(r"\.\d+\.", ".*.", name)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _smoothing_note(scales: dict[str, np.ndarray], absmax: dict[str, np.ndarray]) -> dict[str, Any]:
    """How many inputs were smoothed and how far their worst outlier came down."""
    if not scales:
        return {"inputs": 0}
    before = {t: peak_ratio(absmax[t]) for t in scales}
    worst = max(before, key=before.__getitem__)
    return {"inputs": len(scales), "worst": worst,
            "peak_over_median": [round(before[worst], 1), round(peak_ratio(absmax[worst], scales[worst]), 1)]}


def _scale_note(groups: list[ScaleGroup], scaled: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """How many groups were searched and moved, and how much rounding error that saved."""
    if not groups:
        return {"groups": 0}
    ratios = [r for _, r in scaled.values()]
    return {"groups": len(groups), "scaled": len(scaled),
            "error_ratio_median": round(float(np.median(ratios)), 3) if ratios else 1.0}


def _share_tied_table(graph: Any, inits: dict[str, Any], written: dict[str, tuple],
                      ties: dict[str, str], head_scales: dict[str, np.ndarray]) -> list[str]:
    """Point each tied Gather (``ties``) whose head is now 8-bit at the head's codes;
    returns the Gathers rewritten. A head whose rows were smoothed by ``s`` holds the
    table's columns times ``s``, so the lookup's rows are divided by it again."""
    from onnx import helper, numpy_helper

    shared = []
    for index, node in enumerate(list(graph.node)):
        name = node.name or f"Gather#{index}"
        head = written.get(ties.get(name, ""))
        if node.op_type != "Gather" or head is None:
            continue
        data, scales, plan, k, n = head
        if plan.bits != 8 or k % plan.block:
            continue
        shape_name, rows = f"{data}.rows_shape", f"{data}.rows"
        if shape_name not in inits:
            inits[shape_name] = numpy_helper.from_array(np.array([n, k], np.int64), shape_name)
            graph.initializer.append(inits[shape_name])
        s = head_scales.get(ties[name])
        looked_up = list(node.output) if s is None else [f"{node.output[0]}/smoothed"]
        added = [helper.make_node("Reshape", [data, shape_name], [rows], name=f"{node.name}/SharedRows"),
                 helper.make_node("GatherBlockQuantized", [rows, node.input[1], scales], looked_up,
                                  name=f"{node.name}/SharedBlockQuantized", domain="com.microsoft",
                                  gather_axis=0, quantize_axis=1, block_size=plan.block, bits=8)]
        if s is not None:
            unscale = f"{data}.row_unscale"
            graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), unscale))
            added.append(helper.make_node("Mul", [looked_up[0], unscale], list(node.output),
                                          name=f"{node.name}/Unsmooth"))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for new in reversed(added):
            graph.node.insert(at, new)
        shared.append(name)
    return shared


def write_eight_bit_tables(model: Any, largest_block: int) -> list[str]:
    """Every float lookup table (:func:`float_tables`) as an 8-bit ``GatherBlockQuantized``,
    in place: the codes and scales of an 8-bit MatMul's weight (one scale per row block,
    zero point 128), blocks of the largest power of two up to ``largest_block`` dividing
    the row. onnxruntime's own writer gives tables 4 bits only. Returns the Gathers."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    written: dict[str, tuple[str, str, int]] = {}  # table -> codes, scales, block
    done = []
    for index, node in enumerate(graph.node):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or axis != 0 or len(table.dims) != 2 or table.data_type != _FLOAT:
            continue
        rows = numpy_helper.to_array(table)
        block = block_for(rows.shape[1], largest_block)
        if rows.shape[1] % block:  # a row no block divides stays float rather than padded
            continue
        if table.name not in written:
            q, scales = quantize_weight(rows, 8, block)
            codes, scale_name = f"{table.name}.rows8", f"{table.name}.row_scales"
            graph.initializer.extend([numpy_helper.from_array(pack(q, 8).reshape(rows.shape), codes),
                                      numpy_helper.from_array(scales, scale_name)])
            written[table.name] = (codes, scale_name, block)
        codes, scale_name, block = written[table.name]
        name = node.name or f"Gather#{index}"
        done.append(name)
        node.CopyFrom(helper.make_node(
            "GatherBlockQuantized", [codes, node.input[1], scale_name], list(node.output),
            name=f"{name}_8bit", domain="com.microsoft",
            gather_axis=0, quantize_axis=1, block_size=block, bits=8))
    drop_unused(graph)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def float_tables(model: Any) -> list[str]:
    """Gathers still reading a 2-D float initializer (word or position tables)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
            and len(inits[n.input[0]].dims) == 2 and inits[n.input[0]].data_type == _FLOAT]
