"""The prune stage: remove the least important heads, feed-forward neurons and (decoders)
layers, physically, so the model is dense and smaller.

Scores come from :mod:`edgeopt.prepare.importance` (first-order Taylor for heads and
neurons, block influence for decoder layers), measured on ``--train-data`` or, when none
is given, on the compile's calibration rows (encoders) / calibration text, else eval
text (decoders); the record says which. Each layer keeps its own top-scored units
(a uniform fraction leaves every layer the same width, which the standard config can
say) and at least one head and one neuron. The copy's config carries the shape record
of :mod:`edgeopt.pruned`, so a saved pruned folder reloads exactly."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from edgeopt.artifact import LoadedModel
from edgeopt.errors import ModelError, RecipeError
from edgeopt.families import FEATURE_EXTRACTION
from edgeopt.prepare import register_prepare
from edgeopt.prepare.importance import block_influence, fidelity, random_scores, taylor_scores
from edgeopt.prepare.keep_layers import select_layers
from edgeopt.pruned import (
    DECODER_LAYOUT,
    ENCODER_LAYOUT,
    keep_heads,
    keep_neurons,
    layer_stack,
    layout_of,
    needs_record,
    set_record,
    shapes,
)
from edgeopt.recipe_prepare import PruneConfig


@register_prepare(PruneConfig)
def prune(model: LoadedModel, config: PruneConfig, _workdir: Path, ctx: Any) -> LoadedModel:
    import torch

    try:
        layout = layout_of(str(getattr(model.model.config, "model_type", "")))
    except ModelError as err:
        raise RecipeError(f"prepare prune: {err}") from None
    _check_targets(config, layout, int(model.model.config.num_hidden_layers))
    texts, labels, source = _scoring_text(ctx, config, layout)
    torch.manual_seed(config.seed)
    pruned = copy.deepcopy(model.model).eval()
    before = shapes(pruned)
    embedder = getattr(getattr(ctx.request, "src", None), "task", None) == FEATURE_EXTRACTION
    notes: dict[str, Any] = {"data": source, "score": _score_name(config, layout, embedder)}
    if config.drop_layers:
        notes["layers_dropped"] = _drop_layers(pruned, model.tokenizer, texts, config)
    batches = _batches(model.tokenizer, texts, labels, config, layout)
    if any((config.heads, config.ffn, config.heads_per_layer, config.ffn_per_layer)):
        if config.score == "taylor":
            head_scores, ffn_scores = taylor_scores(pruned, batches, layout)
        else:
            blank = _zero_scores(pruned, layout)
            head_scores = random_scores(blank[0], config.seed)
            ffn_scores = random_scores(blank[1], config.seed + 1)
        _cut(pruned, head_scores, ffn_scores, config, layout)
    record = set_record(pruned)
    out = LoadedModel(pruned, model.tokenizer)
    notes |= {
        "parameters": f"{model.parameter_count():,} -> {out.parameter_count():,}",
        "ffn_per_layer": f"{before['intermediate']} -> {record['intermediate']}",
        "reload": ("edgeopt only (config.json's edgeopt_pruning: per-layer shapes)"
                   if needs_record(pruned) else "plain transformers (the config says the shape)"),
    }
    if layout == ENCODER_LAYOUT:
        notes["heads_per_layer"] = f"{before['heads']} -> {record['heads']}"
    notes |= fidelity(model.model, pruned, batches, layout)
    ctx.record.notes |= notes
    return out


def _score_name(config: PruneConfig, layout: str, embedder: bool = False) -> str:
    if config.score == "random":
        return "random (baseline)"
    units = "gradient x activation (first-order Taylor) for heads and FFN neurons"
    if layout == ENCODER_LAYOUT and embedder:
        return f"{units}; loss: the squared norm of the pooled embedding (no labels to score against)"
    if layout == ENCODER_LAYOUT:
        return f"{units}; loss: cross-entropy to the label, or the model's own prediction"
    return f"{units}; loss: next-token cross-entropy" + (
        "; layers: block influence (1 - cos of layer input and output)" if config.drop_layers else "")


def _check_targets(config: PruneConfig, layout: str, depth: int) -> None:
    if layout == DECODER_LAYOUT and (config.heads or config.heads_per_layer):
        raise RecipeError("prepare prune: decoders prune ffn / ffn_per_layer and drop_layers; "
                          "attention heads are not pruned (the KV cache layout is per model)")
    if layout == ENCODER_LAYOUT and config.drop_layers:
        raise RecipeError("prepare prune: drop_layers is for decoders; for an encoder use the "
                          "keep-layers stage (or distill) to choose its layers")
    if config.drop_layers >= depth:
        raise RecipeError(f"prepare prune: drop_layers {config.drop_layers} would leave no layer "
                          f"(the model has {depth})")
    kept = depth - config.drop_layers
    for name in ("heads_per_layer", "ffn_per_layer"):
        values = getattr(config, name)
        if values is not None and len(values) != kept:
            raise RecipeError(f"prepare prune: {name} has {len(values)} entries; the model has "
                              f"{kept} layers" + (" after drop_layers" if config.drop_layers else ""))


def _scoring_text(ctx: Any, config: PruneConfig, layout: str) -> tuple[list[str], Any, str]:
    """(texts, labels or None, where they came from)."""
    from edgeopt.prepare.train_text import read_train_text

    train = ctx.request.train_data
    if train is not None:
        data = read_train_text(train, "prune", max_rows=None if layout == DECODER_LAYOUT
                               else config.max_rows, seed=config.seed)
        name = f"--train-data {Path(train).name}"
    elif layout == ENCODER_LAYOUT:
        data = ctx.inputs.calibration.sample(min(config.max_rows, len(ctx.inputs.calibration)),
                                            config.seed)
        name = f"calibration rows ({data.source}; no --train-data)"
    else:
        text = ctx.inputs.calibration_text or ctx.inputs.text
        where = ctx.inputs.calibration_source if ctx.inputs.calibration_text else ctx.inputs.source
        return [text], None, f"{where} (no --train-data)"
    return list(data.texts), data.labels, f"{name}, {len(data)} rows"


def _batches(tokenizer: Any, texts: list[str], labels: Any, config: PruneConfig, layout: str
             ) -> list[tuple[dict[str, Any], Any]]:
    import torch

    if layout == DECODER_LAYOUT:
        return [(b, None) for b in _windows(tokenizer, texts, config)]
    out = []
    for start in range(0, len(texts), config.batch_size):
        chunk = texts[start:start + config.batch_size]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=config.seq_len,
                        return_tensors="pt")
        lab = None
        if labels is not None:
            lab = torch.as_tensor(labels[start:start + config.batch_size], dtype=torch.long)
        out.append((dict(enc), lab))
    return out


def _windows(tokenizer: Any, texts: list[str], config: PruneConfig) -> list[dict[str, Any]]:
    """Up to ``max_rows`` full windows of ``seq_len`` tokens of the joined text."""
    import torch

    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    count = min(config.max_rows, len(ids) // config.seq_len)
    if count == 0:
        raise RecipeError(f"prepare prune: the scoring text has {len(ids)} tokens, fewer than one "
                          f"window of seq_len {config.seq_len}; give more text or a smaller seq_len")
    rows = torch.as_tensor(ids[:count * config.seq_len]).reshape(count, config.seq_len)
    return [{"input_ids": rows[i:i + config.batch_size],
             "attention_mask": torch.ones_like(rows[i:i + config.batch_size])}
            for i in range(0, count, config.batch_size)]


def _zero_scores(model: Any, layout: str) -> tuple[list[Any], list[Any]]:
    """Zero score tensors of the shapes :func:`taylor_scores` returns."""
    import torch

    record = shapes(model)
    heads = [torch.zeros(h) for h in record.get("heads", [])] if layout == ENCODER_LAYOUT else []
    return heads, [torch.zeros(w) for w in record["intermediate"]]


def _keep_count(total: int, fraction: float) -> int:
    return max(1, total - math.floor(fraction * total + 0.5))


def _top(scores: Any, count: int) -> list[int]:
    """Indices of the ``count`` best scores, ascending (ties: the lower index)."""
    import torch

    order = torch.argsort(scores, descending=True, stable=True)[:count]
    return sorted(int(i) for i in order)


def _cut(model: Any, head_scores: list[Any], ffn_scores: list[Any], config: PruneConfig,
         layout: str) -> None:
    layers = layer_stack(model)
    for i, layer in enumerate(layers):
        heads = config.heads_per_layer[i] if config.heads_per_layer else config.heads
        if layout == ENCODER_LAYOUT and heads:
            keep_heads(layer.attention, _top(head_scores[i], _keep_count(len(head_scores[i]), heads)))
        ffn = config.ffn_per_layer[i] if config.ffn_per_layer else config.ffn
        if ffn:
            keep_neurons(layer, _top(ffn_scores[i], _keep_count(len(ffn_scores[i]), ffn)), layout)


def _drop_layers(model: Any, tokenizer: Any, texts: list[str], config: PruneConfig) -> str:
    """Drop the ``drop_layers`` layers of lowest block influence (random: any), in place."""
    import torch

    layers = layer_stack(model)
    if config.score == "random":
        influence = random_scores([torch.zeros(len(layers))], config.seed)[0].tolist()
    else:
        influence = block_influence(model, _windows(tokenizer, texts, config))
    drop = set(sorted(range(len(layers)), key=lambda i: (influence[i], i))[:config.drop_layers])
    keep = [i for i in range(len(layers)) if i not in drop]
    select_layers(model, keep)
    scores = ", ".join(f"{i}:{influence[i]:.3f}" for i in range(len(layers)))
    what = "random scores" if config.score == "random" else "block influence"
    return f"{sorted(drop)} of {len(layers)} ({what} {scores})"
