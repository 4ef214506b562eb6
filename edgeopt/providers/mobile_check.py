"""Placement from onnxruntime's mobile usability checker, for providers that cannot run on
this machine (NNAPI, CoreML).

``onnxruntime.tools.mobile_helpers.usability_checker`` ships in the onnxruntime wheel: it
matches every node against the op lists the provider's own build declares
(``nnapi_supported_ops.md``, ``coreml_supported_*_ops.md``), requires fixed input shapes
(and, for CoreML, rank <= 5), and groups the taken nodes into partitions by replaying
onnxruntime's partitioner. It judges op types and shapes only: the per-op caveats of those
lists are reported, not checked. Its functions are called here; its log is not parsed.
Like ``check_onnx_model_mobile_usability``, the graph is first optimized at onnxruntime's
BASIC level, which is what converting it for the app (ORT format) does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeopt.providers.base import Provider
from edgeopt.providers.placement import Placement, group_unsupported, op_key

_FIX_SHAPES = ("an input shape is dynamic; fix the input shape (recipe quantize.fixed_batch "
               "and fixed_sequence)")


def checker_placements(provider: Provider, model: Path,
                       checks: Sequence[tuple[Any, str]]) -> list[Placement]:
    """Placement of ``model`` on ``provider`` per (checker function, its op list file); a
    checker function is ``check(model_proto, require_fixed_input_sizes) -> PartitioningInfo``.
    The graph is optimized and shape-inferred once for all of them."""
    import onnxruntime as ort
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="edgeopt-check-") as tmp:
        basic = Path(tmp) / Path(model).name
        optimize_model(Path(model), basic, use_external_initializers=True)
        shaped = ModelProtoWithShapeInfo(basic).model_with_shape_info
        dynamic = [i.name for i in shaped.graph.input if not _fixed(i)]
        results = [(check(shaped, True), check(shaped, False) if dynamic else None, ops_file)
                   for check, ops_file in checks]
    return [_placement(provider, shaped.graph, info, relaxed, dynamic,
                       f"onnxruntime {ort.__version__} usability checker ({ops_file}); no session",
                       ops_file)
            for info, relaxed, ops_file in results]


def _placement(provider: Provider, graph: Any, info: Any, relaxed: Any, dynamic: list[str],
               detail: str, ops_file: str) -> Placement:
    taken = {tuple(n.output) for group in info.supported_groups for n in group}
    left = []
    for node in graph.node:
        if tuple(node.output) in taken:
            continue
        key = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        if key in info.unsupported_ops:
            why = (f"not in {ops_file}: no {provider.label} kernel", "op")
        elif key in info.ops_with_unsupported_rank:
            why = ("an input has rank above 5, more than CoreML takes", "rank")
        else:
            why = (_FIX_SHAPES, "shape")
        left.append((op_key(node.domain, node.op_type), *why))
    notes = []
    if relaxed is not None and relaxed.num_supported_nodes > info.num_supported_nodes:
        notes.append(f"with fixed input shapes ({', '.join(dynamic)} dynamic now): "
                     f"{relaxed.num_supported_nodes} of {relaxed.num_nodes} nodes in "
                     f"{relaxed.num_partitions} partition(s)")
    notes += [f"unchecked caveat, {c}" for c in info.supported_ops_checker.get_caveats()]
    return Placement(provider.name, provider.ep, provider.label, "checker", detail,
                     nodes=info.num_nodes, taken=info.num_supported_nodes,
                     partitions=tuple(len(g) for g in info.supported_groups),
                     unsupported=group_unsupported(left), notes=tuple(notes))


def _fixed(value: Any) -> bool:
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    return bool(is_fixed_size_tensor(value))
