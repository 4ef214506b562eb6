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
    options = FusionOptions(ort_type)
    options.enable_attention = config.fuse_attention
    options.enable_embed_layer_norm = config.fuse_embeddings
    options.use_multi_head_attention = config.separate_qkv
    options.enable_skip_layer_norm = config.fuse_skip_layernorm
    options.enable_bias_skip_layer_norm = config.fuse_skip_layernorm
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    fused = optimize_model(str(artifact.path), model_type=ort_type, num_heads=heads,
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


def _max_abs_diff(a: OnnxArtifact, b: OnnxArtifact, feeds_list: list[dict[str, np.ndarray]]) -> float:
    sa, sb = make_session(a.path, threads=2), make_session(b.path, threads=2)
    return max(
        float(np.max(np.abs(run_one(sa, f) - run_one(sb, f)))) for f in feeds_list
    )

