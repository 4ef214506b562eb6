"""Export an encoder to ONNX with dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgeopt.artifact import OnnxArtifact
from edgeopt.errors import ModelError
from edgeopt.recipe import ExportConfig
from edgeopt.tasks import EncoderTask


def export_encoder(task: EncoderTask, config: ExportConfig, workdir: Path) -> OnnxArtifact:
    """Trace the task's wrapper with the TorchScript exporter into ``workdir/exported.onnx``.

    The TorchScript exporter with eager attention is used because onnxruntime's
    Attention and EmbedLayerNormalization fusions match that graph and not the SDPA
    one; the example batch has one padded row so the attention-mask path is traced
    rather than specialised away for an all-ones mask.
    """

    model = task.loaded.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return _export(task, config, workdir)
    finally:
        # The PyTorch reference and baseline run the attention users run by default.
        model.set_attn_implementation(previous)


def _export(task: EncoderTask, config: ExportConfig, workdir: Path) -> OnnxArtifact:
    import torch

    module = task.export_module()
    feeds = _example_feeds(task, config.trace_seq_len)
    args = tuple(torch.from_numpy(feeds[n]) for n in task.input_names)
    out = workdir / "exported.onnx"
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(out),
                input_names=task.input_names,
                output_names=[task.output_name],
                dynamic_axes=task.dynamic_axes(),
                opset_version=config.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as err:  # the exporter raises many unrelated types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"ONNX export failed for {task.src.architecture}: {first}") from err
    module.eval()  # the exporter restores the module's previous train/eval mode
    return OnnxArtifact(out)


def _example_feeds(task: EncoderTask, seq_len: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # The loaded model's table, not config.json's: a prepare stage may have trimmed it.
    model_vocab = getattr(getattr(task.loaded.model, "config", None), "vocab_size", None)
    vocab = int(model_vocab or task.src.config.get("vocab_size", 1000))
    ids = rng.integers(low=min(1000, vocab // 2), high=vocab, size=(2, seq_len), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, seq_len // 2 :] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in task.input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds
