"""Qualcomm QNN execution provider (Hexagon HTP): what a static QDQ graph must look like
to run on the NPU rather than fall back to the CPU, how to open a session on it, and where
a graph's nodes go.

The rules follow onnxruntime's own ``quantization/execution_providers/qnn/quant_config.py``
(``get_qnn_qdq_config``), restated as edgeopt's typed plan:

- every op is quantized (an unquantized op leaves the NPU), except Cast;
- MatMul weights use the weight type, per output channel when the config asks for it:
  onnxruntime's QNN tests run A16 activations with per-channel INT8 MatMul weights on
  HTP (``MatMulOp_QDQ`` in ``test/providers/qnn/matmul_test.cpp``), although
  ``get_qnn_qdq_config`` still forces them per-tensor. Without per-channel, MatMul
  weights get an explicit per-tensor weight type. 16-bit MatMul weights are not
  offered: the same tests disable A16W16 MatMul on HTP (wrong results);
- a LayerNormalization scale (gamma) is never signed 8-bit: HTP's LayerNorm validator
  has no s8-gamma combination ("None of the combinations match", measured on QNN 2.51
  with onnxruntime-qnn 2.7.0; the shipped qnn-int8 bundle lost all 13 LayerNorms and
  their Q/DQ to the CPU, 14 partitions). It takes u8 gamma with 8- or 16-bit inputs and
  symmetric s16 gamma with 16-bit inputs; 16-bit is used where allowed (384 values: the
  size is nothing, the resolution 128x finer). The int32 bias stays as quantized;
- 16-bit Sigmoid and Tanh outputs use the fixed scales HTP's kernels assume;
- no calibrated range narrower than 1e-4 (HTP rejects near-zero scales);
- static input shapes (HTP compiles the graph for one shape).

:data:`HTP_CONFIG` is the configuration the ``qnn-int8`` target spells out.

Sessions come from the ``onnxruntime-qnn`` plugin (``pip install 'edgeopt[qnn]'``), which
sits beside the CPU ``onnxruntime`` package: its library is registered with onnxruntime,
its devices picked with ``get_ep_devices()`` and added to the session options. The older
``providers=[("QNNExecutionProvider", {...})]`` form silently gives the CPU. On x86_64 the
HTP backend is a simulator, 50-170x slower than the CPU: good for placement and
numerics, never for timings. Placement comes from the provider's own op trace
(``enable_framework_op_trace``): which nodes it takes, and why it refuses the others.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.placement import Placement, failed, group_unsupported, not_checkable
from edgeopt.providers.session import assigned_groups, check_got, session_options
from edgeopt.quant.plan import QdqPlan, TensorOverride
from edgeopt.recipe import StaticInt8Config

EP = "QNNExecutionProvider"
# Snapdragon 8 Gen 3 (QNN_SOC_MODEL_SM8650). Without a soc_model the simulator fails to
# allocate most graphs (QNN_COMMON_ERROR_MEM_ALLOC).
SOC_MODEL = "57"
# QNN leaves graph-input Q and graph-output DQ nodes to the CPU unless told otherwise;
# then a session with CPU fallback disabled cannot load. The whole graph, its I/O
# quantization included, runs on HTP: what an app must pass too (the manifest says so).
PROVIDER_OPTIONS = {"soc_model": SOC_MODEL, "offload_graph_io_quantization": "0"}
# Why QNN leaves a node to the CPU on purpose (graph I/O quantization, when offloaded).
_BY_DESIGN = "is configured to not take"
_INSTALL = "pip install 'edgeopt[qnn]' (the onnxruntime-qnn plugin, Python 3.11+)"

# What HTP runs well: A16W8 (16-bit activations keep transformer accuracy; 8-bit
# weights keep the size), every op quantized, one fixed input shape.
HTP_CONFIG = StaticInt8Config(
    calibration="minmax",
    per_channel=True,
    activation_type="uint16",
    activation_symmetric=False,
    weight_type="int8",
    weight_symmetric=True,
    op_types=(),
    activation_matmuls=True,
    quantize_outputs=True,
    fixed_batch=1,
    fixed_sequence=128,
    provider_rules="qnn",
)

_SKIP_OPS = {"Cast"}
# LayerNormalization gamma HTP takes, by whether its input is 16-bit (see the docstring).
_LN_SCALE = {True: TensorOverride("int16", symmetric=True),
             False: TensorOverride("uint8", symmetric=False)}
_MIN_RANGE = 1e-4
# Output scale / zero point HTP expects for 16-bit Sigmoid and Tanh.
_FIXED_OUTPUTS = {
    ("Sigmoid", "uint16"): (1.0 / 65536.0, 0),
    ("Sigmoid", "int16"): (1.0 / 32768.0, 0),
    ("Tanh", "uint16"): (1.0 / 32768.0, 32768),
    ("Tanh", "int16"): (1.0 / 32768.0, 0),
}


def qdq_rules(model: Any, config: StaticInt8Config, plan: QdqPlan) -> QdqPlan:
    """``plan`` adjusted so the graph runs on QNN's HTP (``model``: the shape-inferred
    float onnx.ModelProto the plan was made for)."""
    inits = {t.name for t in model.graph.initializer}
    op_types = tuple(t for t in plan.op_types if t not in _SKIP_OPS)
    excluded = set(plan.exclude)
    overrides = dict(plan.overrides)
    weight = TensorOverride(config.weight_type, config.weight_symmetric)
    for node in model.graph.node:
        if node.op_type not in op_types or node.name in excluded:
            continue
        if node.op_type == "MatMul" and not config.per_channel:
            for name in node.input[1:2]:
                if name in inits:
                    overrides[name] = weight
        if node.op_type == "LayerNormalization" and node.input[1] in inits:
            act = overrides.get(node.input[0], TensorOverride(config.activation_type)).quant_type
            overrides[node.input[1]] = _LN_SCALE[act.endswith("16")]
        out_type = overrides.get(node.output[0], TensorOverride(config.activation_type)).quant_type
        fixed = _FIXED_OUTPUTS.get((node.op_type, out_type))
        if fixed is not None:
            overrides[node.output[0]] = TensorOverride(out_type, scale=fixed[0], zero_point=fixed[1])
    return dataclasses.replace(plan, op_types=op_types, overrides=overrides,
                               minimum_real_range=_MIN_RANGE)


def _availability() -> Availability:
    try:
        import onnxruntime_qnn
    except ImportError:
        return Availability("unavailable", f"onnxruntime-qnn is not installed; {_INSTALL}")
    info = onnxruntime_qnn.build_and_package_info
    where = "HTP simulator" if platform.machine() in ("x86_64", "AMD64") else "HTP"
    return Availability("session", f"onnxruntime-qnn {info.__version__} (QNN "
                        f"{getattr(info, 'qnn_version', '?')}), {where}, soc_model {SOC_MODEL}")


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The QNN libraries print a banner on stdout when they load; keep stdout for edgeopt's
    own output (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _devices() -> list[Any]:
    import onnxruntime as ort
    import onnxruntime_qnn

    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    if not devices:  # first use in this process: register the plugin library
        ort.register_execution_provider_library(EP, onnxruntime_qnn.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    return devices


def _open(model: Any, config: SessionConfig, trace_dir: str | None = None) -> Any:
    import onnxruntime as ort
    import onnxruntime_qnn

    options = session_options(config)
    # The plugin logs every refused node as an error through onnxruntime's default logger;
    # placement reports them, so only fatal messages go to the console.
    options.log_severity_level = 4
    qnn = {"backend_path": onnxruntime_qnn.get_qnn_htp_path(), **PROVIDER_OPTIONS}
    if trace_dir is not None:
        qnn |= {"enable_framework_op_trace": "1", "framework_op_trace_dir": trace_dir}
    with _stdout_to_stderr():
        options.add_provider_for_devices(_devices(), qnn)
        return ort.InferenceSession(model, sess_options=options,
                                    disabled_optimizers=list(config.disabled_optimizers) or None)


def _place(model: Path, config: SessionConfig) -> Placement:
    available = _availability()
    if available.kind != "session":
        return not_checkable(PROVIDER, available.detail)
    detail = f"{available.detail} session (placement only, no timings)"
    with tempfile.TemporaryDirectory(prefix="edgeopt-qnn-") as tmp:
        try:
            session = _open(str(model), dataclasses.replace(config, threads=1), trace_dir=tmp)
            check_got(session, PROVIDER)
        except Exception as err:  # the QNN compile's own errors: report them, do not crash
            return failed(PROVIDER, detail, err)
        groups = assigned_groups(session)
        traces = sorted(glob.glob(os.path.join(tmp, "*.json")))
        trace = json.loads(Path(traces[0]).read_text()) if traces else {}
    reasons = {u.get("node_name"): u.get("reason", "") for u in trace.get("unsupported_nodes", [])}
    partitions = tuple(len(nodes) for ep, nodes in groups if ep == EP)
    others = [(name, op) for ep, nodes in groups if ep != EP for name, op in nodes]
    by_design = sum(_BY_DESIGN in reasons.get(name, "") for name, _ in others)
    left = [_left(op, reasons.get(name), name) for name, op in others
            if _BY_DESIGN not in reasons.get(name, "")]
    notes = () if traces else ("the provider wrote no op trace: reasons are missing",)
    return Placement(PROVIDER.name, EP, PROVIDER.label, "session", detail,
                     nodes=sum(partitions) + len(others), taken=sum(partitions),
                     partitions=partitions, unsupported=group_unsupported(left),
                     by_design=by_design, notes=notes)


def _left(op: str, text: str | None, node: str) -> tuple[str, str, str]:
    """(op type, reason, cause) of one node QNN refused; HTP needs static shapes, so a
    shape it cannot read is a dynamic-shape refusal."""
    reason = _reason(text, node)
    return op, reason, "shape" if reason.startswith("Cannot get shape") else "op"


def _reason(text: str | None, node: str) -> str:
    """The first sentence of QNN's reason, without the node's own name (so that nodes of one
    op type group together)."""
    if not text:
        return "QNN gave no reason (not in its op trace)"
    first = re.split(r"\.(?=\s|[A-Z]|$)", text.strip(), maxsplit=1)[0]
    return first.replace(f"`{node}`", "this node")


PROVIDER = Provider(name="qnn", ep=EP, label="QNN HTP", availability=_availability,
                    place=_place, open=_open, fixed_shapes=True, rules=qdq_rules,
                    app_options=tuple(PROVIDER_OPTIONS.items()))
