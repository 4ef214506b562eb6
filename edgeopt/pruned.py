"""Structured-pruning surgery, and the shape record that lets a pruned model reload.

A pruned model keeps its standard config plus one key, ``edgeopt_pruning``: the kept
attention heads and feed-forward width of every layer. It rides in ``config.json``, so
every ``save_pretrained`` of the model (ours, a Trainer checkpoint, the user's) carries
it. Where the standard config can say the shape (a uniform FFN width is just
``intermediate_size``) plain ``transformers`` reloads the folder; where it cannot (BERT
ties the head size to ``hidden_size / num_attention_heads``, so fewer heads of the same
size has no config spelling) :func:`load_pruned` builds the model from its config, cuts
it to the recorded shapes, then loads the safetensors weights strictly.

Two layouts, found by module names so no model needs its own branch:

- encoder (BERT, RoBERTa, XLM-R): ``attention.self.{query,key,value}``, ``attention.output.dense``,
  ``intermediate.dense``, ``output.dense`` in each layer;
- decoder (Llama, Qwen, Mistral): ``mlp.{gate_proj,up_proj,down_proj}`` in each layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.errors import ModelError

RECORD_KEY = "edgeopt_pruning"
RECORD_VERSION = 1
ENCODER_LAYOUT = "encoder"
DECODER_LAYOUT = "decoder"
# Model types whose layers have the encoder layout above (the supported encoder set).
ENCODER_PRUNABLE = ("bert", "roberta", "xlm-roberta")
DECODER_PRUNABLE = ("llama", "qwen2", "qwen3", "mistral")


def layer_stack(model: Any) -> Any:
    """The model's list of transformer layers (as long as ``num_hidden_layers``)."""
    import torch

    depth = int(getattr(model.config, "num_hidden_layers", 0))
    for module in model.modules():
        for child in module.children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == depth:
                return child
    raise ModelError(f"found no list of {depth} layers in {type(model).__name__}")


def layout_of(model_type: str) -> str:
    if model_type in ENCODER_PRUNABLE:
        return ENCODER_LAYOUT
    if model_type in DECODER_PRUNABLE:
        return DECODER_LAYOUT
    raise ModelError(f"structured pruning supports model types "
                     f"{', '.join(ENCODER_PRUNABLE + DECODER_PRUNABLE)}, not {model_type!r}")


def head_size(model: Any) -> int:
    return int(layer_stack(model)[0].attention.self.attention_head_size)


def shapes(model: Any) -> dict[str, Any]:
    """The per-layer shapes of ``model`` as its record holds them."""
    layers = layer_stack(model)
    if layout_of(model.config.model_type) == ENCODER_LAYOUT:
        size = head_size(model)
        return {"version": RECORD_VERSION, "layout": ENCODER_LAYOUT, "head_size": size,
                "heads": [layer.attention.self.query.out_features // size for layer in layers],
                "intermediate": [layer.intermediate.dense.out_features for layer in layers]}
    return {"version": RECORD_VERSION, "layout": DECODER_LAYOUT,
            "intermediate": [layer.mlp.up_proj.out_features for layer in layers]}


def keep_heads(attention: Any, heads: list[int]) -> None:
    """Keep only ``heads`` (indices, ascending) of one BERT-style attention block, in
    place: the q/k/v output rows of those heads and the matching input columns of the
    output projection. The head size stays; the module's head count follows."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    inner = attention.self
    size = inner.attention_head_size
    index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads]).long()
    inner.query = prune_linear_layer(inner.query, index)
    inner.key = prune_linear_layer(inner.key, index)
    inner.value = prune_linear_layer(inner.value, index)
    attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
    # The forward reshapes to (-1, head_size); these keep the attributes truthful.
    inner.num_attention_heads = len(heads)
    inner.all_head_size = len(heads) * size


def keep_neurons(layer: Any, neurons: Any, layout: str) -> None:
    """Keep only ``neurons`` (indices, ascending) of one layer's feed-forward block."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    index = torch.as_tensor(neurons, dtype=torch.long)
    if layout == ENCODER_LAYOUT:
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index)
        layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    else:
        mlp = layer.mlp
        mlp.gate_proj = prune_linear_layer(mlp.gate_proj, index)
        mlp.up_proj = prune_linear_layer(mlp.up_proj, index)
        mlp.down_proj = prune_linear_layer(mlp.down_proj, index, dim=1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(index)


def apply_record(model: Any, record: dict[str, Any]) -> None:
    """Cut a freshly built model to the recorded shapes (which weights fill later)."""
    if record.get("version") != RECORD_VERSION:
        raise ModelError(f"config.json's {RECORD_KEY} has version {record.get('version')!r}; "
                         f"this edgeopt reads version {RECORD_VERSION}")
    layers = layer_stack(model)
    layout = record["layout"]
    widths = record["intermediate"]
    heads = record.get("heads") or []
    if len(widths) != len(layers) or (heads and len(heads) != len(layers)):
        raise ModelError(f"config.json's {RECORD_KEY} lists {len(widths)} layers; the model "
                         f"has {len(layers)}")
    for i, layer in enumerate(layers):
        if heads:
            if layer.attention.self.attention_head_size != record["head_size"]:
                raise ModelError(f"config.json's {RECORD_KEY}: head size {record['head_size']} "
                                 f"differs from the config's")
            keep_heads(layer.attention, list(range(int(heads[i]))))
        keep_neurons(layer, list(range(int(widths[i]))), layout)


def set_record(model: Any) -> dict[str, Any]:
    """Write the model's current shapes into its config (and ``intermediate_size`` when
    every layer has the same width, so the standard config says it too)."""
    record = shapes(model)
    widths = set(record["intermediate"])
    if len(widths) == 1:
        model.config.intermediate_size = widths.pop()
    setattr(model.config, RECORD_KEY, record)
    return record


def needs_record(model: Any) -> bool:
    """True when the standard config cannot rebuild ``model`` (plain transformers cannot
    reload it): per-layer widths, or fewer heads than the config's head count."""
    record = shapes(model)
    if len(set(record["intermediate"])) > 1:
        return True
    return any(h != model.config.num_attention_heads for h in record.get("heads", []))


def load_pruned(model_class: Any, path: Path, config: Any) -> Any:
    """Build ``model_class`` from ``config``, cut it to ``config.edgeopt_pruning``, and load
    the folder's safetensors weights: every tensor must fit and none may be left over
    (tied copies excepted), so the result is the saved model bit for bit."""
    import torch
    from safetensors.torch import load_file

    model = model_class.from_config(config, dtype=torch.float32)
    apply_record(model, getattr(config, RECORD_KEY))
    state: dict[str, Any] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(file)))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ModelError(f"{path}: weights do not fit the shapes in config.json's {RECORD_KEY} "
                         f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})"
                         ) from None
    model.tie_weights()
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    params = model.state_dict()
    untied = [k for k in missing if params[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise ModelError(f"{path}: weights and config.json's {RECORD_KEY} disagree "
                         f"(missing {untied[:3]}, unexpected {list(unexpected)[:3]})")
    return model.eval()
