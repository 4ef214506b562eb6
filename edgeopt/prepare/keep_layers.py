"""The keep-layers stage: a copy of the model with only the chosen transformer layers.

The layer stack is the model's one ``ModuleList`` as long as ``num_hidden_layers``
(BERT's ``encoder.layer``, Llama's ``model.layers``), so no model needs its own branch.
The copy's config says the new depth, and decoder attention modules get their new
positions (``layer_idx`` indexes the KV cache)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from edgeopt.artifact import LoadedModel
from edgeopt.errors import RecipeError
from edgeopt.prepare import register_prepare
from edgeopt.recipe_prepare import KeepLayersConfig


@register_prepare(KeepLayersConfig)
def keep_layers(model: LoadedModel, config: KeepLayersConfig, _workdir: Path, ctx: Any) -> LoadedModel:

    depth = int(getattr(model.model.config, "num_hidden_layers", 0))
    if config.layers[-1] >= depth:
        raise RecipeError(f"prepare keep-layers: layer {config.layers[-1]} does not exist; the "
                          f"model has {depth} layers (0..{depth - 1})")
    student = copy.deepcopy(model.model)
    select_layers(student, list(config.layers))
    out = LoadedModel(student.eval(), model.tokenizer)
    ctx.record.notes |= {"layers": f"{depth} -> {len(config.layers)}",
                         "parameters": f"{model.parameter_count():,} -> {out.parameter_count():,}"}
    return out


def select_layers(model: Any, keep: list[int]) -> None:
    """Keep only the layers ``keep`` (0-based, in order) of ``model``, in place: the layer
    list, each kept attention's ``layer_idx`` and the config's depth and layer types."""
    import torch

    owner, name = _layer_stack(model, int(getattr(model.config, "num_hidden_layers", 0)))
    kept = torch.nn.ModuleList(getattr(owner, name)[i] for i in keep)
    setattr(owner, name, kept)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]


def _layer_stack(model: Any, depth: int) -> tuple[Any, str]:
    """(parent module, attribute) of the model's layer list."""
    import torch

    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == depth:
                return parent, name
    raise RecipeError(f"prepare keep-layers: found no list of {depth} layers in "
                      f"{type(model).__name__}; this stage cannot change its depth")
