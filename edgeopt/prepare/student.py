"""The student a distillation starts from: a copy of a model with a chosen subset of its
layers and, optionally, narrower feed-forward blocks.

Layers are found as keep-layers finds them (the one ``ModuleList`` as long as
``num_hidden_layers``). Feed-forward neurons are found per layer as the linears whose
output (the up side: BERT's ``intermediate.dense``, Llama's ``gate_proj``/``up_proj``) or
input (the down side: ``output.dense``, ``down_proj``) is ``intermediate_size`` wide; the
kept neurons are those with the largest weight magnitude (||up row|| x ||down column||), a
data-free score that is enough for a start point the distillation then trains. Every
layer keeps the same width, so ``intermediate_size`` in the saved config describes it
and ``from_pretrained`` reloads it with no edgeopt code."""

from __future__ import annotations

import copy
from typing import Any

from edgeopt.errors import RecipeError
from edgeopt.prepare.keep_layers import _layer_stack


def choose_layers(spec: Any, depth: int, stage: str) -> tuple[int, ...]:
    """The kept layer indices for ``spec`` ("all", "every-other" or a list)."""
    if spec == "all":
        return tuple(range(depth))
    if spec == "every-other":
        # Odd indices (1, 3, 5 of 6) keep the last layer, which the head was trained on.
        return tuple(range(depth - 1, -1, -2))[::-1]
    layers = tuple(spec)
    if layers[-1] >= depth:
        raise RecipeError(f"prepare {stage}: layer {layers[-1]} does not exist; the model has "
                          f"{depth} layers (0..{depth - 1})")
    return layers


def build_student(model: Any, layers: tuple[int, ...], ffn_width: int | None, stage: str) -> Any:
    """A copy of ``model`` with only ``layers`` and, if set, ``ffn_width`` feed-forward
    neurons per layer. ``model`` is not touched."""
    import torch

    depth = int(getattr(model.config, "num_hidden_layers", 0))
    student = copy.deepcopy(model)
    if layers != tuple(range(depth)):
        owner, name = _layer_stack(student, depth)
        kept = torch.nn.ModuleList(getattr(owner, name)[i] for i in layers)
        setattr(owner, name, kept)
        for new_index, layer in enumerate(kept):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index  # decoders: the KV-cache slot
        student.config.num_hidden_layers = len(kept)
        if getattr(student.config, "layer_types", None):
            student.config.layer_types = [student.config.layer_types[i] for i in layers]
    if ffn_width is not None:
        _narrow_ffn(student, ffn_width, stage)
    return student


def _narrow_ffn(model: Any, width: int, stage: str) -> None:
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    inter = int(getattr(model.config, "intermediate_size", 0))
    if not 0 < width <= inter:
        raise RecipeError(f"prepare {stage}: ffn_width {width} must be between 1 and the model's "
                          f"intermediate_size {inter}")
    if width == inter:
        return
    owner, name = _layer_stack(model, int(model.config.num_hidden_layers))
    for layer in getattr(owner, name):
        ups, downs = [], []
        for parent in layer.modules():
            for child_name, child in parent.named_children():
                if isinstance(child, torch.nn.Linear):
                    if child.out_features == inter and child.in_features != inter:
                        ups.append((parent, child_name, child))
                    elif child.in_features == inter and child.out_features != inter:
                        downs.append((parent, child_name, child))
        if not ups or not downs:
            raise RecipeError(f"prepare {stage}: found no feed-forward linears {inter} wide in "
                              f"{type(layer).__name__}; ffn_width cannot narrow this model")
        with torch.no_grad():
            score = torch.ones(inter)
            for _, _, lin in ups:
                score *= lin.weight.norm(dim=1)
            for _, _, lin in downs:
                score *= lin.weight.norm(dim=0)
        keep = torch.sort(torch.topk(score, width).indices).values
        for parent, child_name, lin in ups:
            setattr(parent, child_name, prune_linear_layer(lin, keep, dim=0))
        for parent, child_name, lin in downs:
            setattr(parent, child_name, prune_linear_layer(lin, keep, dim=1))
    model.config.intermediate_size = width


def hidden_map(student_depth: int, teacher_depth: int, given: tuple[int, ...] | None,
               stage: str) -> tuple[int, ...]:
    """Teacher layer each student layer's output is matched to: ``given``, else evenly
    spaced ending on the teacher's last layer (3 of 6: 1, 3, 5)."""
    if given is not None:
        if len(given) != student_depth or max(given) >= teacher_depth:
            raise RecipeError(f"prepare {stage}: hidden_map needs one teacher layer (0.."
                              f"{teacher_depth - 1}) per student layer ({student_depth})")
        return given
    return tuple(round((i + 1) * teacher_depth / student_depth) - 1 for i in range(student_depth))
