"""Static INT8 (QDQ): weights and activations quantized with scales fixed ahead of time
from calibration on real rows, written as QuantizeLinear/DequantizeLinear pairs around
each quantized op. Mobile accelerators (NNAPI, XNNPACK, QNN's HTP) and the CPU EP map
``DQ -> op (-> Q)`` units to integer kernels.

    x --Q--DQ--+
               MatMul --> y (float, into the bias Add)      W stored as int8
    W(int8)-DQ-+

What gets quantized is a :class:`QdqPlan`, built from the typed config (plus the rules
of one execution provider, see :mod:`edgeopt.providers`) and handed to onnxruntime's
``quantize_static`` only at the boundary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.errors import DataError
from edgeopt.quant.gemm_to_matmul import gemm_to_matmul
from edgeopt.quant.outlier_split import split_outliers
from edgeopt.quant.plan import QdqPlan, TensorOverride
from edgeopt.quant.registry import Candidate, QuantContext, quantized_op_counts, register_quantizer
from edgeopt.recipe import StaticInt8Config
from edgeopt.runtime import conform_feeds

# 8-bit type -> its 16-bit sibling (A16W8), and back (tables stay 8-bit under A16).
WIDE = {"uint8": "uint16", "int8": "int16", "uint16": "uint16", "int16": "int16"}
NARROW = {"uint16": "uint8", "int16": "int8", "uint8": "uint8", "int8": "int8"}
_MATMULS = ("MatMul", "Gemm")


def plan_qdq(model: Any, config: StaticInt8Config) -> QdqPlan:
    """The plan for ``model`` (shape-inferred, so activation types are known)."""
    inits = {t.name for t in model.graph.initializer}
    # Empty op_types: every op type the graph has, as onnxruntime's QNN helper does
    # (its quantizer leaves integer tensors alone).
    op_types = config.op_types or tuple(sorted({n.op_type for n in model.graph.node}))
    exclude = list(config.exclude)
    if not config.activation_matmuls:
        exclude += [n.name for n in model.graph.node
                    if n.op_type in _MATMULS and n.input[1] not in inits]
    excluded = set(exclude)
    quantized = [n for n in model.graph.node if n.op_type in op_types and n.name not in excluded]
    floats = _float_tensors(model)
    overrides: dict[str, TensorOverride] = {}
    wide = WIDE[config.activation_type]
    for node in quantized:
        if node.op_type in config.int16_op_types or node.name in config.int16_nodes:
            tensors = [x for x in node.input if x and x not in inits and x in floats]
            if config.quantize_outputs:
                tensors += [y for y in node.output if y in floats]
            for t in tensors:
                overrides[t] = TensorOverride(wide, config.activation_symmetric)
    # onnxruntime quantizes a Gather's table as an activation: under 16-bit activations
    # it would store the word embeddings in 16 bits (35 MB for MiniLM instead of 23).
    if config.wide_activations:
        for node in quantized:
            if node.op_type == "Gather" and node.input[0] in inits:
                overrides[node.input[0]] = TensorOverride(NARROW[config.activation_type],
                                                          config.activation_symmetric)
    for t in additive_mask_tensors(model) & floats:
        base = overrides.get(t, TensorOverride(config.activation_type, config.activation_symmetric))
        overrides[t] = dataclasses.replace(base, range=(-MASK_RANGE, MASK_RANGE))
    outputs = tuple(op_types) if config.quantize_outputs else tuple(
        t for t in op_types if t not in _MATMULS)
    return QdqPlan(tuple(op_types), tuple(dict.fromkeys(exclude)), overrides, outputs)


# Additive attention masks hold the float32 minimum (-3.4e38) where a token is masked; a
# calibrated range spanning it leaves no resolution for the attention scores (MiniLM-SST2
# under qnn-int8: 71% label agreement). Tensors carrying such a mask are quantized over +-100
# instead: exp(-100) is 0 to float32 precision, and scores stay well inside +-100.
MASK_RANGE = 100.0
_MASK_MIN = -1e30
# Ops a mask passes through unchanged in meaning (Softmax consumes it: the search stops).
_MASK_CARRIERS = {"Where", "Add", "Sub", "Mul", "Div", "Cast", "Expand", "Unsqueeze", "Squeeze",
                  "Reshape", "Concat", "Slice", "Transpose", "Identity"}


def additive_mask_tensors(model: Any) -> set[str]:
    """Tensors downstream of a float constant at or below -1e30, through mask-carrying
    elementwise and shape ops, up to (and including) the Softmax input."""
    from onnx import numpy_helper

    def huge_negative(t: Any) -> bool:
        a = numpy_helper.to_array(t)
        return a.dtype.kind == "f" and a.size > 0 and float(a.min()) <= _MASK_MIN

    marked = {t.name for t in model.graph.initializer if huge_negative(t)}
    for node in model.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and huge_negative(value):
                marked.update(node.output)
    sources = set(marked)
    changed = True
    while changed:  # the graph is small; a fixed point is cheaper to read than a topo walk
        changed = False
        for node in model.graph.node:
            if node.op_type in _MASK_CARRIERS and any(x in marked for x in node.input):
                new = [o for o in node.output if o and o not in marked]
                marked.update(new)
                changed = changed or bool(new)
    return marked - sources


def _float_tensors(model: Any) -> set[str]:
    import onnx

    g = model.graph
    infos = [*g.input, *g.value_info, *g.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def static_candidates(model: Any, config: StaticInt8Config) -> list[Candidate]:
    """Quantized nodes with a float activation input, in graph order. With 8-bit
    activations a kept node gets 16-bit inputs, which every reader of that tensor then
    shares, so nodes reading the same tensor (Q, K and V) form one unit."""
    model, _ = _prepared(model)
    plan = plan_qdq(model, config)
    inits = {t.name for t in model.graph.initializer}
    floats = _float_tensors(model)
    skip = set(plan.exclude) | (set() if config.wide_activations else set(config.int16_nodes))
    # Nodes computing an additive mask are clipped to +-100 on purpose; their error is
    # huge by SQNR and harmless to the result, and float would not change the clip.
    masks = additive_mask_tensors(model)
    groups: dict[str, list[tuple[Any, list[str]]]] = {}
    for node in model.graph.node:
        if node.op_type not in plan.op_types or node.name in skip or masks & set(node.output):
            continue
        acts = [x for x in node.input if x and x not in inits and x in floats]
        if not acts or node.op_type == "Gather":
            continue  # Gather quantizes its table only, which stays 8-bit either way
        key = node.name if config.wide_activations else acts[0]
        groups.setdefault(key, []).append((node, acts))
    return [Candidate(nodes=tuple(n.name for n, _ in members),
                      inputs=tuple(dict.fromkeys(t for _, acts in members for t in acts)),
                      outputs=tuple(_ranked_output(n) for n, _ in members), op=members[0][0].op_type)
            for members in groups.values()]


def _ranked_output(node: Any) -> str:
    """The tensor that judges ``node``: its output, or for a Gemm rewritten as MatMul +
    Add the Add's output (the name the float graph has)."""
    if node.output[0].endswith("_matmul"):
        return node.output[0].removesuffix("_matmul")
    return node.output[0]


@register_quantizer(StaticInt8Config, candidates=static_candidates)
def quantize_static_int8(
    artifact: OnnxArtifact, config: StaticInt8Config, workdir: Path, record: PassRecord,
    context: QuantContext,
) -> OnnxArtifact:
    """Calibrate on ``context.calibration`` and write the QDQ graph."""
    import onnx

    if not context.calibration:
        raise DataError("static-int8 needs calibration rows; pass --calibration-data FILE "
                        "(or eval data, which is sampled when no calibration file is given)")
    model = onnx.load(str(artifact.path))
    split = ()
    if config.outlier_threshold is not None:
        result = split_outliers(model, artifact.path, list(context.calibration),
                                config.outlier_threshold, config.outlier_max_channels)
        split = result.float_nodes
        record.notes["outlier_channels"] = sum(len(c) for c in result.channels.values())
    model, record.notes["gemm_rewritten"] = _prepared(model)
    plan = plan_qdq(model, config)
    if context.plan_rules is not None:  # the execution provider's rules (edgeopt.providers)
        plan = context.plan_rules(model, config, plan)
    plan = dataclasses.replace(plan, exclude=(*plan.exclude, *split))
    source = workdir / "static-float.onnx"
    onnx.save(model, str(source))
    feeds = calibration_feeds(context.calibration, config)
    out = workdir / "quantized.onnx"
    cache = _cache_path(context, source, config, plan, feeds)
    with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime's calibrators print progress
        _quantize(source, out, config, plan, feeds, cache)
    if config.fixed_shape is not None:
        fix_input_shape(out, config.fixed_shape)
        record.notes["fixed_input_shape"] = list(config.fixed_shape)
    record.notes["calibration"] = f"{config.calibration} on {sum(_rows(f) for f in feeds)} rows"
    record.notes["float_nodes"] = len(plan.exclude)
    widened = sum(1 for o in plan.overrides.values() if o.quant_type.endswith("16"))
    record.notes["activations"] = config.activation_type + (
        f" ({widened} tensors 16-bit)" if widened and not config.wide_activations else "")
    record.notes["quantized_ops"] = quantized_op_counts(out)
    return OnnxArtifact(out)


def _prepared(model: Any) -> tuple[Any, int]:
    """A copy with Gemm rewritten as MatMul (how many: the second value), then shapes
    and types inferred: onnxruntime's symbolic inference types contrib-op outputs
    (MultiHeadAttention, BiasGelu) that ONNX's own inference leaves blank, and tensor
    overrides need those types."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rewritten = gemm_to_matmul(copy)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(copy, auto_merge=True), rewritten
    except Exception:  # it gives up on some exports; ONNX's inference still types most tensors
        return onnx.shape_inference.infer_shapes(copy), rewritten


def calibration_feeds(batches: tuple[dict[str, np.ndarray], ...], config: StaticInt8Config
                      ) -> list[dict[str, np.ndarray]]:
    """The batches to calibrate on. A fixed-shape graph sees every input padded to its
    sequence length, so its calibration rows are padded the same way."""
    if config.fixed_shape is None:
        return list(batches)
    return conform_feeds(list(batches), (1, config.fixed_shape[1]))


def _rows(feed: dict[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0])


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds; ``set_range``
    lets the calibrator take them a slice at a time (flat memory)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: set[str]) -> None:
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self.set_range(0, len(self.feeds))

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, len(self.feeds))


_ORT_TYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
_ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def _quantize(source: Path, out: Path, config: StaticInt8Config, plan: QdqPlan,
              feeds: list[dict[str, np.ndarray]], cache: Path | None) -> None:
    """The boundary: edgeopt's plan as onnxruntime's ``quantize_static`` arguments."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(source), load_external_data=False)
    names = {i.name for i in model.graph.input}
    overrides = {name: [_ort_override(o)] for name, o in sorted(plan.overrides.items())}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    sixteen = any(o.quant_type.endswith("16") for o in plan.overrides.values()) or config.wide_activations
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.activation_symmetric,
        "WeightSymmetric": config.weight_symmetric,
        "OpTypesToExcludeOutputQuantization": [t for t in plan.op_types if t not in plan.output_op_types],
        # Contrib-op outputs that inference could not type are float in these graphs.
        "DefaultTensorType": onnx.TensorProto.FLOAT,
        # One calibration batch at a time: histograms need equal shapes within a call,
        # and memory stays flat in the number of rows.
        "CalibStridedMinMax": 1,
        "CalibPercentile": config.percentile,
        "TensorQuantOverrides": overrides,
        # 16-bit Q/DQ are ONNX ops from opset 21; before that, onnxruntime's contrib ones.
        "UseQDQContribOps": sixteen and opset < 21,
    }
    if plan.minimum_real_range is not None:
        extra["MinimumRealRange"] = plan.minimum_real_range
    quantize_static(
        str(source), str(out), _Reader(feeds, names), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(plan.op_types), per_channel=config.per_channel,
        reduce_range=False, activation_type=getattr(QuantType, _ORT_TYPES[config.activation_type]),
        weight_type=getattr(QuantType, _ORT_TYPES[config.weight_type]),
        nodes_to_exclude=list(plan.exclude),
        calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[config.calibration]),
        extra_options=extra, calibration_cache_path=cache,
    )


def _ort_override(o: TensorOverride) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType

    out: dict[str, Any] = {"quant_type": getattr(QuantType, _ORT_TYPES[o.quant_type])}
    if o.scale is not None:
        dtype = {"uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16}
        out["scale"] = np.array(o.scale, dtype=np.float32)
        out["zero_point"] = np.array(o.zero_point or 0, dtype=dtype[o.quant_type])
    elif o.symmetric is not None:
        out["symmetric"] = o.symmetric
    if o.range is not None and o.scale is None:
        out["rmin"], out["rmax"] = (np.array(v, dtype=np.float32) for v in o.range)
    return out


def _cache_path(context: QuantContext, source: Path, config: StaticInt8Config, plan: QdqPlan,
                feeds: list[dict[str, np.ndarray]]) -> Path | None:
    """Where the ranges of this graph, method and data are kept: a budget search
    quantizes the same graph many times, and calibration is most of the cost."""
    if context.cache_dir is None:
        return None
    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(json.dumps([config.calibration, config.percentile, sorted(plan.op_types)]).encode())
    for feed in feeds:
        for k in sorted(feed):
            h.update(k.encode())
            h.update(np.ascontiguousarray(feed[k]).tobytes())
    context.cache_dir.mkdir(parents=True, exist_ok=True)
    return context.cache_dir / f"ranges-{h.hexdigest()[:24]}.json"


def fix_input_shape(path: Path, shape: tuple[int, int]) -> None:
    """Fix every graph input to ``shape`` (NNAPI and QNN need static shapes) and let
    the outputs follow, in place."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model = onnx.load(str(path))
    for inp in model.graph.input:
        make_input_shape_fixed(model.graph, inp.name, list(shape))
    fix_output_shapes(model)
    onnx.save(model, str(path))
