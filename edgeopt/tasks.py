"""Task adapters for encoders: how to load, wrap for export, feed and judge each task.

Everything task-specific lives here so the export, validation and benchmark code stays
generic: an adapter says which inputs the graph takes, which single output it returns,
which of its rows are judged (every row, or for per-token outputs the real tokens) and
how (labels for classifiers, cosine for embeddings). What differs between model types
is in :mod:`edgeopt.encoder_families`. Decoders have their own adapter in
:mod:`edgeopt.decoder`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.artifact import LoadedModel
from edgeopt.encoder_families import family_of
from edgeopt.errors import ModelError
from edgeopt.families import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION
from edgeopt.metrics import label_agreement
from edgeopt.pruned import RECORD_KEY
from edgeopt.source import SourceModel

if TYPE_CHECKING:
    import torch

# Rows are truncated to this many tokens (or the model's limit) for validation; a
# tokenizer put in the graph truncates the same way.
ENCODE_MAX_LENGTH = 128


def load_tokenizer(src: SourceModel, trust_remote_code: bool = False) -> Any:
    """The source folder's tokenizer, offline."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src.path, local_files_only=True,
                                             trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load the tokenizer in {src.path}: {first}") from None


def load_torch(src: SourceModel, trust_remote_code: bool = False) -> LoadedModel:
    """Load the source model offline with the class optimum maps its task to."""
    import torch
    from optimum.exporters.tasks import TasksManager
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    model_class = TasksManager.get_model_class_for_task(
        src.task,
        framework="pt",
        library="transformers",
    )
    try:
        model = _load_pruned(model_class, src) if RECORD_KEY in src.config else model_class.from_pretrained(
            src.path,
            dtype=torch.float32,
            local_files_only=True,
            use_safetensors=not src.uses_pickle,
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(
            src.adapter.tokenizer_path if src.adapter else src.path,  # an adapter may bring its own
            local_files_only=True, trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load {src.path}: {first}") from None
    if src.adapter is not None:  # fold the adapter into the base (edgeopt.lora)
        from edgeopt.lora import merge_adapter

        model = merge_adapter(model, src.adapter)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer)


def _load_pruned(model_class: Any, src: SourceModel) -> Any:
    """A structurally pruned folder: rebuilt from the shapes its config records."""
    from transformers import AutoConfig

    from edgeopt.pruned import load_pruned

    config = AutoConfig.from_pretrained(src.path, local_files_only=True)
    return load_pruned(model_class, src.path, config)


def fixed_length_feeds(tokenizer: Any, text: str, seq_len: int, batch: int,
                       input_names: list[str]) -> dict[str, np.ndarray]:
    """``batch`` identical rows of exactly ``seq_len`` tokens: ``text`` tokenized, repeated
    or truncated between the tokenizer's start and end tokens, no padding."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [100]
    body = (ids * (seq_len // len(ids) + 1))[: max(seq_len - 2, 0)]
    row = [tokenizer.cls_token_id or tokenizer.bos_token_id or 0, *body,
           tokenizer.sep_token_id or tokenizer.eos_token_id or 0][:seq_len]
    input_ids = np.tile(np.asarray(row, dtype=np.int64), (batch, 1))
    feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(input_ids)
    return feeds


class EncoderTask:
    """Shared by encoder tasks: tokenizer inputs in, one float output."""

    output_name: str = ""

    def __init__(self, src: SourceModel, loaded: LoadedModel) -> None:
        self.src = src
        self.loaded = loaded
        names = list(getattr(loaded.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        if not family_of(src.model_type).reads_token_types(src.config):
            names = [n for n in names if n != "token_type_ids"]
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
        if "input_ids" not in self.input_names or "attention_mask" not in self.input_names:
            raise ModelError(f"{src.path}: tokenizer must produce input_ids and attention_mask")

    def max_positions(self) -> int:
        """Longest sequence the model accepts (position table and tokenizer limit)."""
        limits = [int(self.src.config.get("max_position_embeddings", 512))]
        tok_max = getattr(self.loaded.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and tok_max < 1_000_000:
            limits.append(tok_max)
        return min(limits)

    # -- feeds ----------------------------------------------------------------------------
    def encode(self, texts: list[str], max_length: int = ENCODE_MAX_LENGTH) -> dict[str, np.ndarray]:
        enc = self.loaded.tokenizer(
            texts, padding=True, truncation=True, max_length=min(max_length, self.max_positions()),
            return_tensors="np",
        )
        return {n: np.asarray(enc[n], dtype=np.int64) for n in self.input_names}

    def fixed_length_feeds(self, text: str, seq_len: int, batch: int) -> dict[str, np.ndarray]:
        """Benchmark inputs: real text tokenized, repeated/truncated to exactly ``seq_len``
        (capped at the model's longest sequence)."""
        return fixed_length_feeds(self.loaded.tokenizer, text, min(seq_len, self.max_positions()),
                                  batch, self.input_names)

    def scored_tokens(self, feeds: dict[str, np.ndarray]) -> np.ndarray | None:
        """For per-token outputs, ``[batch, sequence]`` True on the tokens that are judged;
        None when the output has one row per input (every row is judged)."""
        return None

    # -- export ---------------------------------------------------------------------------
    def export_module(self) -> torch.nn.Module:
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {n: {0: "batch", 1: "sequence"} for n in self.input_names}
        axes[self.output_name] = {0: "batch"}
        return axes

    # -- reference ------------------------------------------------------------------------
    def torch_outputs(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        module = self.export_module()
        with torch.inference_mode():
            args = [torch.from_numpy(feeds[n]) for n in self.input_names]
            return module(*args).float().numpy()

    def task_metrics(
        self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Task-level parity; ``mask`` is :meth:`scored_tokens` over all rows (per-token
        outputs only)."""
        raise NotImplementedError


class _ClassifierModule:
    """Built lazily so torch is only imported when an export runs."""

    @staticmethod
    def build(model: Any, input_names: list[str]) -> torch.nn.Module:
        import torch

        class ClassifierLogits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
                return self.model(**dict(zip(input_names, inputs, strict=True))).logits

        return ClassifierLogits().eval()


class ClassificationTask(EncoderTask):
    """Sequence classification: output ``logits`` [batch, num_labels]."""

    output_name = "logits"

    def export_module(self) -> torch.nn.Module:
        return _ClassifierModule.build(self.loaded.model, self.input_names)

    def task_metrics(
        self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> dict[str, float]:
        ref_pred = ref.argmax(-1)
        cand_pred = cand.argmax(-1)
        out = {"label_agreement": label_agreement(ref, cand)}
        if labels is not None:
            out["accuracy_reference"] = float((ref_pred == labels).mean())
            out["accuracy"] = float((cand_pred == labels).mean())
            out["accuracy_drop"] = out["accuracy_reference"] - out["accuracy"]
        return out


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    import torch

    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        masked = hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
        pooled = masked.max(dim=1).values
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
    return pooled


class EmbeddingTask(EncoderTask):
    """Sentence embeddings: the folder's pooling (and normalization) inside the graph."""

    output_name = "sentence_embedding"

    def export_module(self) -> torch.nn.Module:
        import torch

        model, names = self.loaded.model, self.input_names
        pooling, normalize = self.src.pooling or "mean", self.src.normalize

        class PooledEmbedding(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
                kwargs = dict(zip(names, inputs, strict=True))
                hidden = self.model(**kwargs).last_hidden_state
                return _pool(hidden, kwargs["attention_mask"], pooling, normalize)

        return PooledEmbedding().eval()

    def task_metrics(
        self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> dict[str, float]:
        # Per-sentence cosine is the task metric for embeddings; the generic output
        # metrics (cosine_min / cosine_mean) already measure it.
        return {}


class TokenClassificationTask(EncoderTask):
    """Token classification (NER): output ``logits`` [batch, sequence, num_labels].

    Judged per token on real tokens only: padding has no label, and the tokenizer's
    special tokens ([CLS], [SEP], <s>) carry none a user reads, so neither counts.
    """

    output_name = "logits"

    def export_module(self) -> torch.nn.Module:
        return _ClassifierModule.build(self.loaded.model, self.input_names)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {**super().dynamic_axes(), self.output_name: {0: "batch", 1: "sequence"}}

    def scored_tokens(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        tok = self.loaded.tokenizer
        # [UNK] is special to the tokenizer but stands for a real word, so it is judged.
        special = [i for i in tok.all_special_ids if i != tok.unk_token_id]
        ids = feeds["input_ids"]
        return (feeds["attention_mask"] != 0) & ~np.isin(ids, special)

    def task_metrics(
        self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None,
        mask: np.ndarray | None = None,
    ) -> dict[str, float]:
        # Eval rows carry one label per sentence, not per token: no accuracy here.
        return {"label_agreement": label_agreement(ref, cand, mask)}


ENCODER_TASKS: dict[str, type[EncoderTask]] = {
    TEXT_CLASSIFICATION: ClassificationTask,
    FEATURE_EXTRACTION: EmbeddingTask,
    TOKEN_CLASSIFICATION: TokenClassificationTask,
}
