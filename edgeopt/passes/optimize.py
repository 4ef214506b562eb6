"""onnxruntime transformer fusions (Attention, SkipLayerNorm, BiasGelu, ...), kept only
when the fused graph still matches the plain export."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import OnnxArtifact, PassRecord
from edgeopt.encoder_families import family_of
from edgeopt.graph import op_counts
from edgeopt.pruned import RECORD_KEY
from edgeopt.recipe import OptimizeConfig
from edgeopt.runtime import make_session, run_one


def optimize_encoder(
    artifact: OnnxArtifact,
    config: OptimizeConfig,
    workdir: Path,
    model_config: dict[str, Any],
    check_feeds: list[dict[str, np.ndarray]],
    record: PassRecord,
) -> OnnxArtifact:
    """Fuse with onnxruntime's transformer optimizer; return the input if parity breaks."""
    if not config.fusions:
        record.notes["fusions"] = "disabled by recipe"
        return artifact
    family = family_of(str(model_config.get("model_type")))
    ort_type = family.ort_model_type
    if ort_type is None:
        record.notes["fusions"] = f"no fusion rules for {family.model_type}"
        return artifact
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = family.heads_and_hidden(model_config)
    source = artifact.path
    if model_config.get(RECORD_KEY):
        # Pruned heads: each layer has its own count, which the fusion reads from the
        # reshape constants once they are pinned (it treats num_heads=0 as "detect").
        source = pin_head_counts(artifact.path, workdir / "heads-pinned.onnx")
        heads, hidden = 0, 0
        record.notes["head_counts"] = "per layer (pruned), detected from the graph"
        # It warns that a pruned layer's q/k/v width is not the model's hidden size: true, and fine.
        logging.getLogger("fusion_attention").setLevel(logging.ERROR)
    options = FusionOptions(ort_type)
    options.enable_attention = config.fuse_attention
    options.enable_embed_layer_norm = config.fuse_embeddings
    options.use_multi_head_attention = config.separate_qkv
    options.enable_skip_layer_norm = config.fuse_skip_layernorm
    options.enable_bias_skip_layer_norm = config.fuse_skip_layernorm
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    fused = optimize_model(str(source), model_type=ort_type, num_heads=heads,
                           hidden_size=hidden, opt_level=0, optimization_options=options)
    out = workdir / "optimized.onnx"
    fused.save_model_to_file(str(out))
    candidate = OnnxArtifact(out)
    diff = _max_abs_diff(artifact, candidate, check_feeds)
    record.notes["fused_ops"] = dict(op_counts(out, domain="com.microsoft"))
    record.notes["fusion_max_abs_diff"] = diff
    if not np.isfinite(diff) or diff > config.parity_atol:
        record.notes["fusions"] = (
            f"rejected: fused graph differs by {diff:.3g} > {config.parity_atol:g}; kept the plain export"
        )
        return artifact
    record.notes["fusions"] = "applied"
    return candidate


def pin_head_counts(path: Path, out: Path) -> Path:
    """Rewrite each attention reshape ``(batch, seq, -1, head_size)`` of a projection
    ``x @ W + b`` to its exact head count ``W.shape[1] // head_size`` (what the -1 resolves
    to), so the fusion can read every layer's count; the graph computes the same."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    producer = {o: n for n in graph.node for o in n.output}
    pinned: dict[int, str] = {}
    for node in graph.node:
        concat = producer.get(node.input[1]) if node.op_type == "Reshape" else None
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            continue
        minus, size = consts.get(concat.input[2]), consts.get(concat.input[3])
        width = _projection_width(producer.get(node.input[0]), producer, inits)
        if minus is None or size is None or minus.size != 1 or size.size != 1 or width is None:
            continue
        if int(minus.ravel()[0]) != -1 or int(size.ravel()[0]) <= 0 or width % int(size.ravel()[0]):
            continue
        count = width // int(size.ravel()[0])
        if count not in pinned:
            pinned[count] = f"edgeopt_heads_{count}"
            graph.initializer.append(numpy_helper.from_array(
                np.array([count], dtype=minus.dtype), pinned[count]))
        concat.input[2] = pinned[count]
    onnx.save(model, str(out))
    return out


def _projection_width(node: Any, producer: dict[str, Any], inits: dict[str, Any]) -> int | None:
    """Output width of ``Add(MatMul(x, W), b)`` with W an initializer, else None."""
    if node is None or node.op_type != "Add":
        return None
    for name in node.input:
        matmul = producer.get(name)
        if matmul is not None and matmul.op_type == "MatMul" and matmul.input[1] in inits:
            dims = inits[matmul.input[1]].dims
            return int(dims[-1]) if len(dims) == 2 else None
    return None


def _max_abs_diff(a: OnnxArtifact, b: OnnxArtifact, feeds_list: list[dict[str, np.ndarray]]) -> float:
    sa, sb = make_session(a.path, threads=2), make_session(b.path, threads=2)
    return max(
        float(np.max(np.abs(run_one(sa, f) - run_one(sb, f)))) for f in feeds_list
    )

