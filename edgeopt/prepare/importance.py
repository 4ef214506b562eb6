"""Importance scores for structured pruning, measured on the user's text.

Heads and feed-forward neurons: **first-order Taylor** (gradient x activation; Molchanov
et al. 2019, and Michel et al. 2019's head-mask gradient, which it equals). A unit's
score is ``sum over examples |sum over tokens a * dL/da|`` where ``a`` is what the unit
feeds the next projection (a head's slice of the attention context, a neuron's
activation): the first-order change of the loss when that unit is zeroed. Chosen over
activation magnitude because it asks what the *task* loses, not how loud a unit is:
a big activation the classifier ignores scores low. It costs one backward pass per batch
and needs no labels: rows without one are scored against the model's own prediction
(the KL of a model to itself has zero gradient, so it cannot be the loss); embedders
with no logits use the squared norm of the mean-pooled embedding; decoders use their
next-token loss, which plain text always has.

Decoder layers: **block influence** (Men et al. 2024, ShortGPT): one minus the cosine
between a layer's input and output hidden states, averaged over tokens. A layer that
barely turns its input is the cheapest to drop; one forward pass, no gradient.

Gradients are taken with ``torch.autograd.grad`` on the captured activations, so the
input model's parameters (and their ``.grad``) are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from edgeopt.pruned import ENCODER_LAYOUT, head_size, layer_stack


def _inputs_of(modules: list[Any]) -> tuple[list[Any], list[Any]]:
    """Hooks that keep each module's input tensor of the current forward."""
    seen: list[Any] = [None] * len(modules)

    def keep(i: int) -> Any:
        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            seen[i] = args[0]
        return hook

    return seen, [m.register_forward_pre_hook(keep(i)) for i, m in enumerate(modules)]


def _loss(model: Any, batch: dict[str, Any], labels: Any, layout: str) -> tuple[Any, Any]:
    """(summed loss, the model's outputs) for one batch: see the module docstring."""
    import torch
    import torch.nn.functional as F

    if layout != ENCODER_LAYOUT:
        out = model(**batch)
        logits = out.logits[:, :-1].float()
        target = batch["input_ids"][:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               reduction="sum"), logits
    out = model(**batch)
    logits = getattr(out, "logits", None)
    if logits is None:  # an embedder: the pooled embedding's energy
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        return (pooled ** 2).sum(), pooled
    own = logits.argmax(-1)
    if logits.dim() == 3:  # per-token labels: the model's own, on real tokens
        target = torch.where(batch["attention_mask"].bool(), own, -100)
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="sum"), logits
    target = own if labels is None else torch.where(labels >= 0, labels, own)
    return F.cross_entropy(logits, target, reduction="sum"), logits


def taylor_scores(model: Any, batches: Iterable[tuple[dict[str, Any], Any]], layout: str
                  ) -> tuple[list[Any], list[Any]]:
    """(per-layer head scores, per-layer FFN neuron scores); head scores are empty lists
    for decoders (their heads are not pruned)."""
    import torch

    layers = list(layer_stack(model))
    if layout == ENCODER_LAYOUT:
        size = head_size(model)
        attn_out = [layer.attention.output.dense for layer in layers]
        ffn_out = [layer.output.dense for layer in layers]
    else:
        size, attn_out = 0, []
        ffn_out = [layer.mlp.down_proj for layer in layers]
    heads_seen, hooks = _inputs_of(attn_out)
    ffn_seen, more = _inputs_of(ffn_out)
    hooks += more
    head_scores = [torch.zeros(m.in_features // size) if size else None for m in attn_out]
    ffn_scores = [torch.zeros(m.in_features) for m in ffn_out]
    try:
        for batch, labels in batches:
            with torch.enable_grad():
                loss, _ = _loss(model, batch, labels, layout)
                acts = [*heads_seen[:len(attn_out)], *ffn_seen]
                grads = torch.autograd.grad(loss, acts)
            for i in range(len(attn_out)):
                taylor = (acts[i] * grads[i]).detach()  # (batch, tokens, heads * size)
                per_head = taylor.reshape(*taylor.shape[:2], -1, size).sum(dim=(1, 3))
                head_scores[i] += per_head.abs().sum(0)
            for i in range(len(ffn_out)):
                j = len(attn_out) + i
                ffn_scores[i] += (acts[j] * grads[j]).detach().sum(1).abs().sum(0)
    finally:
        for hook in hooks:
            hook.remove()
    return [s for s in head_scores if s is not None], ffn_scores


def block_influence(model: Any, batches: Iterable[dict[str, Any]]) -> list[float]:
    """Per layer: mean over real tokens of 1 - cos(layer input, layer output)."""
    import torch

    layers = list(layer_stack(model))
    totals = [0.0] * len(layers)
    count = 0
    current: dict[str, Any] = {}

    def watch(i: int) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            totals[i] += float(((1 - cos) * current["mask"]).sum())
        return hook

    hooks = [layer.register_forward_hook(watch(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.inference_mode():
            for batch in batches:
                current["mask"] = batch["attention_mask"].float()
                count += int(batch["attention_mask"].sum())
                model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    return [t / max(count, 1) for t in totals]


def random_scores(like: list[Any], seed: int) -> list[Any]:
    """Scores of the same shapes, uniformly random (the baseline a score must beat)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(t.shape, generator=gen) for t in like]


def fidelity(original: Any, pruned: Any, batches: list[tuple[dict[str, Any], Any]], layout: str
             ) -> dict[str, Any]:
    """How close the pruned model stays on the scoring data (no recovery yet): label
    agreement (classifiers), mean cosine (embedders), or perplexity before -> after."""
    import torch

    if layout != ENCODER_LAYOUT:
        totals = [0.0, 0.0]
        tokens = 0
        with torch.inference_mode():
            for batch, _ in batches:
                for i, model in enumerate((original, pruned)):
                    totals[i] += float(_loss(model, batch, None, layout)[0])
                tokens += batch["input_ids"][:, 1:].numel()
        before, after = (math.exp(t / max(tokens, 1)) for t in totals)
        return {"perplexity_on_scoring_text": f"{before:.2f} -> {after:.2f}"}
    same, count, cosines = 0, 0, []
    with torch.inference_mode():
        for batch, _ in batches:
            a, b = original(**batch), pruned(**batch)
            logits = getattr(a, "logits", None)
            if logits is not None:  # labels: per sentence, or per real token
                hits = logits.argmax(-1) == b.logits.argmax(-1)
                real = batch["attention_mask"].bool() if logits.dim() == 3 else torch.ones_like(hits)
                same, count = same + int(hits[real].sum()), count + int(real.sum())
            else:
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pa, pb = ((o.last_hidden_state * mask).sum(1) / mask.sum(1) for o in (a, b))
                cosines.append(torch.nn.functional.cosine_similarity(pa, pb, dim=-1))
    if count:
        return {"agreement_with_unpruned_on_scoring_rows": round(same / count, 4)}
    return {"mean_cosine_with_unpruned_on_scoring_rows": round(float(torch.cat(cosines).mean()), 4)}
