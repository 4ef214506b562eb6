"""Export a causal LM (Llama, Qwen2/3, Mistral, GPT-2 families) with its KV cache.

One graph serves prefill (zero-length past) and decode (one new token), see
:mod:`edgeopt.decoder.io`. The dynamo exporter is used because it keeps a tied
embedding as one initializer (the TorchScript exporter folds the lm_head transpose into
a second copy) and records each node's module path, which names the projections so a
recipe can refer to them (``model.layers.3.mlp.down_proj/MatMul``, ``lm_head/MatMul``).
"""

from __future__ import annotations

import ast
import logging
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.artifact import OnnxArtifact
from edgeopt.decoder.attention import fold_attention, same_outputs
from edgeopt.decoder.gqa import to_group_query_attention
from edgeopt.decoder.io import DecoderIO, decoder_io
from edgeopt.errors import ModelError
from edgeopt.recipe import ExportConfig
from edgeopt.tasks import LoadedModel

if TYPE_CHECKING:
    import torch

# Opset 23 gives RMSNormalization, RotaryEmbedding and Attention as single ONNX ops
# (onnxruntime runs each as one kernel): SmolLM2 runs ~1,350 nodes per decode step
# instead of ~2,440, and decode is ~35% faster in fp32 and ~40% in INT4 (where per-node
# overhead is a larger share of a step). Asking the dynamo exporter for 17 or lower fails.
MIN_OPSET = 23
# Weights stay inside model.onnx, and one protobuf file cannot exceed 2 GiB.
MAX_INLINE_BYTES = 2**31 - 2**26
_SCOPES = "pkg.torch.onnx.name_scopes"


def export_decoder(loaded: LoadedModel, config: ExportConfig, workdir: Path,
                   notes: dict[str, Any] | None = None) -> tuple[OnnxArtifact, DecoderIO]:
    """Export ``loaded.model`` to ``workdir/exported.onnx``; returns the graph and its io.
    ``notes``, when given, receives what the graph clean-up did."""
    import torch

    model = loaded.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if weight_bytes > MAX_INLINE_BYTES:
        raise ModelError(f"{type(model).__name__} has {weight_bytes / 2**30:.1f} GiB of fp32 weights; "
                         "a single-file ONNX bundle holds at most 2 GiB (about 500M parameters)")
    io = decoder_io(model.config, getattr(model, "generation_config", None))
    module = kv_cache_module(model, io)
    args, shapes = _example_inputs(io, config.trace_seq_len)
    out = workdir / "exported.onnx"
    # "torchvision is not installed", per-initializer dedup notes and similar chatter; own
    # loggers, because onnxruntime's quantizer may have set the root logger to INFO.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    previous = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(out), input_names=io.input_names,
                              output_names=io.output_names, dynamic_shapes=shapes,
                              opset_version=max(config.opset, MIN_OPSET), dynamo=True,
                              optimize=True, external_data=False, verbose=False)
    except Exception as err:  # the exporter raises many unrelated types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"ONNX export failed for {type(model).__name__}: {first}") from err
    finally:
        for log, level in zip(loggers, previous, strict=True):
            log.setLevel(level)
    heads = int(model.config.get_text_config(decoder=True).num_attention_heads)
    folded = _finish_graph(out, io, heads, tuple(a.numpy() for a in args), config.kv_cache)
    if notes is not None:
        notes["attention_folded"] = folded
    return OnnxArtifact(out), replace(io, cache_in_place=folded["in_place_cache"] > 0)


def kv_cache_module(model: Any, io: DecoderIO) -> torch.nn.Module:
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)``.

    The 4-D additive mask is built here and handed to the model ready-made, so
    transformers' mask helpers return it as-is and none of their data-dependent
    shortcuts (no padding, empty cache, one query) are baked into the trace.
    """
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    text_config = model.config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None)
    window = getattr(text_config, "sliding_window", None)

    class KVCacheLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # Plain full-length layers everywhere: a sliding window is applied in the mask,
            # so every present has total_sequence positions and the io stays uniform.
            cache = DynamicCache()
            for i in range(io.num_layers):
                layer = DynamicLayer()
                layer.lazy_initialization(past[2 * i], past[2 * i + 1])
                # Set directly: update() would concatenate onto a 1-D empty tensor.
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                cache.layers.append(layer)
            out = self.model(input_ids=input_ids, attention_mask=_masks(input_ids, attention_mask),
                             position_ids=position_ids, past_key_values=cache, use_cache=True,
                             return_dict=True)
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    def _masks(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        seq, total = input_ids.shape[1], attention_mask.shape[1]
        q_idx = torch.arange(seq, device=input_ids.device) + (total - seq)
        k_idx = torch.arange(total, device=input_ids.device)
        keep = attention_mask[:, None, None, :].bool()
        causal = (k_idx[None, :] <= q_idx[:, None])[None, None] & keep
        sliding = causal & (q_idx[:, None] - k_idx[None, :] < window)[None, None] if window else None
        if layer_types is not None:  # Qwen2/3: one mask per layer type
            masks = {"full_attention": _additive(causal)}
            if "sliding_attention" in layer_types and sliding is not None:
                masks["sliding_attention"] = _additive(sliding)
            return masks
        return _additive(sliding if sliding is not None else causal)  # Mistral: window or none

    def _additive(allowed: torch.Tensor) -> torch.Tensor:
        dtype = model.get_input_embeddings().weight.dtype
        return torch.where(allowed, torch.zeros((), dtype=dtype),
                           torch.full((), torch.finfo(dtype).min, dtype=dtype))

    return KVCacheLM().eval()


def _example_inputs(io: DecoderIO, seq_len: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Example feeds whose dynamic sizes all differ (equal sizes would be traced as equal)."""
    import torch
    from torch.export import Dim

    gen = torch.Generator().manual_seed(0)
    batch, seq = 2, max(seq_len, 4)
    past_len = seq + 3
    ids = torch.randint(0, io.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    mask[1, :2] = 0  # a left-padded row
    pos = (mask.cumsum(1) - 1).clamp(min=0)[:, past_len:]
    shape = (batch, io.num_kv_heads, past_len, io.head_dim)
    past = [torch.randn(shape, generator=gen) for _ in io.past_names]
    dyn = Dim.DYNAMIC  # total = past + sequence cannot be written with named Dims
    # *past is one varargs entry, so its shapes are one tuple.
    shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn}, tuple({0: dyn, 2: dyn} for _ in past))
    return (ids, mask, pos, *past), shapes


def _finish_graph(path: Path, io: DecoderIO, heads: int, example: tuple[Any, ...],
                  kv_cache: str) -> dict[str, Any]:
    """Name the dynamic axes as the io says and the projections after their modules, fold
    the attention plumbing into ONNX Attention and, for an ``"in-place"`` ``kv_cache``,
    hand every layer's Attention to GroupQueryAttention; each rewrite is kept only when
    the graph still matches the export on ``example`` feeds. Returns what was done."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    axes = io.input_axes() | io.output_axes()
    for value in [*graph.input, *graph.output]:
        for dim, want in zip(value.type.tensor_type.shape.dim, axes[value.name], strict=True):
            dim.Clear()
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
    del graph.value_info[:]  # the exporter's s-symbols on intermediates would contradict the names
    name_projections(model)
    feeds = dict(zip(io.input_names, example, strict=True))
    folded, kept = _checked(model, feeds, lambda m: fold_attention(m, heads, io.num_kv_heads),
                            lambda f: bool(f.grouped_kv or f.three_d))
    notes: dict[str, Any] = {"grouped_kv": folded.grouped_kv if kept else 0,
                             "three_d": folded.three_d if kept else 0, "in_place_cache": 0}
    if not kept and (folded.grouped_kv or folded.three_d):
        notes["reverted"] = "outputs differed from the export"  # a pattern matched wrongly
    if kv_cache == "in-place" and notes["three_d"]:
        # A cache buffer shared by past and present only works when every layer writes in
        # place: a concatenating layer's present would outgrow the buffer.
        layers, kept = _checked(model, feeds, to_group_query_attention, lambda n: n == io.num_layers)
        if kept:
            notes["in_place_cache"] = layers
        else:
            notes["in_place_skipped"] = (f"{layers} of {io.num_layers} layers matched"
                                         if layers != io.num_layers else "outputs differed")
    onnx.save(model, str(path))
    return notes


def _checked(model: Any, feeds: dict[str, Any], rewrite: Callable[[Any], Any],
             wanted: Callable[[Any], bool]) -> tuple[Any, bool]:
    """Apply ``rewrite`` to ``model`` in place and keep it only when its result is
    ``wanted`` and the outputs on ``feeds`` stay the same; otherwise restore ``model``.
    Returns the rewrite's result and whether it was kept."""
    before = model.SerializeToString()
    result = rewrite(model)
    if wanted(result) and same_outputs(before, model.SerializeToString(), feeds):
        return result, True
    model.ParseFromString(before)
    return result, False


def name_projections(model: Any) -> int:
    """Rename MatMul/Gemm nodes that multiply by a weight to ``{module path}/{op}``.

    The module path comes from the exporter's name-scope metadata, without the export
    wrapper's own prefix, so it matches the checkpoint's parameter names.
    """
    inits = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    taken = {n.name for n in model.graph.node}
    renamed = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        weight = node.input[1]
        src = producer.get(weight)
        is_weight = weight in inits or (src is not None and src.op_type == "Transpose"
                                        and src.input[0] in inits)
        module = _module_path(node)
        if not is_weight or not module:
            continue
        name, k = f"{module}/{node.op_type}", 1
        while name in taken:
            k += 1
            name = f"{module}/{node.op_type}_{k}"
        taken.discard(node.name)
        taken.add(name)
        node.name = name
        renamed += 1
    return renamed


def _module_path(node: Any) -> str | None:
    scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES), None)
    if scopes is None:
        return None
    try:
        path = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    if len(path) < 2 or not path[-2]:
        return None
    module = str(path[-2])  # path[-1] is the aten op itself ("linear_3")
    return module.removeprefix("model.")  # the KVCacheLM wrapper's attribute
