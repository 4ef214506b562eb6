"""``edgeopt diagnose REFERENCE CANDIDATE --data FILE``: where a candidate model departs
from its reference, layer by layer and node by node, on real inputs.

Each side is an ``.onnx`` file or a bundle folder; the reference may also be a Hugging
Face model folder (or demo name), run in PyTorch. The comparison itself lives in
:mod:`edgeopt.intermediates`, the result in :mod:`edgeopt.diagnosis`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle import MANIFEST, bundle_file, read_manifest
from edgeopt.diagnosis import Diagnosis
from edgeopt.errors import BundleError, ModelError, UsageError
from edgeopt.evaldata import EvalData
from edgeopt.intermediates import diagnose_onnx, diagnose_torch_vs_onnx
from edgeopt.runtime import conform_feeds, fixed_input_shape
from edgeopt.source import SourceModel
from edgeopt.tasks import EncoderTask

__all__ = ["Diagnosis", "diagnose", "diagnose_compiled", "diagnose_onnx", "diagnose_torch_vs_onnx"]

BATCH_SIZE = 16  # rows per run: enough to amortise the session call, small activations
MAX_LENGTH = 128


@dataclass(frozen=True)
class _Side:
    """One model to compare: an ONNX graph, or (reference only) a PyTorch model."""

    label: str
    onnx: Path | None = None
    folder: Path | None = None  # where its tokenizer lives
    src: SourceModel | None = None


def diagnose(
    reference: str | Path,
    candidate: str | Path,
    data: EvalData,
    rows: int = 64,
    jump_db: float = 6.0,
    tokenizer: str | Path | None = None,
) -> Diagnosis:
    """Compare ``candidate`` with ``reference`` on a deterministic sample of ``rows`` rows.

    ``tokenizer`` (a folder) is needed only when both sides are bare ``.onnx`` files.
    """
    if rows < 1:
        raise UsageError(f"rows must be >= 1, got {rows}")
    if not jump_db > 0:
        raise UsageError(f"jump_db must be > 0 dB, got {jump_db}")
    ref = _resolve(reference, "reference")
    cand = _resolve(candidate, "candidate")
    sample = data.sample(rows)
    batches = _batches(list(sample.texts))
    if ref.src is not None:
        task = _load_task(ref.src)
        feeds = [task.encode(b, max_length=MAX_LENGTH) for b in batches]
        result = diagnose_torch_vs_onnx(task.export_module(), _onnx(cand), feeds,
                                        task.input_names, jump_db)
    else:
        tok = _tokenizer(tokenizer, ref, cand)
        feeds = [_encode(tok, b) for b in batches]
        result = diagnose_onnx(_onnx(ref), _onnx(cand), feeds, jump_db)
    return replace(result, reference=ref.label, candidate=cand.label, source=sample.source)


def diagnose_compiled(
    task: EncoderTask, data: EvalData, candidate: Path, reference: Path | None = None,
    rows: int = 64, jump_db: float = 6.0,
) -> Diagnosis:
    """For a compile whose gate failed: the fp32 graph ``reference`` vs the final graph
    when there is one (quantization error), else the PyTorch model vs the final graph."""
    sample = data.sample(rows)
    feeds = [task.encode(b, max_length=MAX_LENGTH) for b in _batches(list(sample.texts))]
    shape = fixed_input_shape(candidate)
    if shape is not None:  # a graph fixed to one shape (NNAPI, QNN) takes only that
        feeds = conform_feeds(feeds, shape)
    if reference is None:
        result = diagnose_torch_vs_onnx(task.export_module(), candidate, feeds, task.input_names,
                                        jump_db)
        ref_label = "PyTorch"
    else:
        result = diagnose_onnx(reference, candidate, feeds, jump_db)
        ref_label = "onnx fp32"
    return replace(result, reference=ref_label, candidate="compiled model", source=sample.source)


def _resolve(arg: str | Path, role: str) -> _Side:
    path = Path(arg).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"{role} {path} is not an .onnx file; pass an .onnx file or a "
                             "bundle folder" + (" or a model folder" if role == "reference" else ""))
        return _Side(str(path), onnx=path)
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        rel = manifest.get("model")
        if not isinstance(rel, str):
            raise BundleError(f"{path}/{MANIFEST} names no model file; recompile the bundle")
        return _Side(str(path), onnx=bundle_file(path, rel), folder=path)
    if role != "reference":
        raise ModelError(f"{role} {path} is neither an .onnx file nor a bundle folder (with "
                         f"{MANIFEST}); PyTorch can only be the reference")
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS

    src = inspect_model(str(arg))  # a model folder or a demo name; raises ModelError
    if src.task not in ENCODER_TASKS:
        raise ModelError(f"diagnose compares encoders (classifiers, token classifiers, "
                         f"embeddings); {src.path} is {src.task}")
    return _Side(str(src.path), folder=src.path, src=src)


def _onnx(side: _Side) -> Path:
    if side.onnx is None:
        raise ModelError(f"{side.label} is a PyTorch model; the candidate must be an .onnx file "
                         "or a bundle folder")
    return side.onnx


def _load_task(src: SourceModel) -> EncoderTask:
    from edgeopt.tasks import ENCODER_TASKS, load_torch

    return ENCODER_TASKS[src.task](src, load_torch(src))


def _tokenizer(explicit: str | Path | None, ref: _Side, cand: _Side) -> Any:
    folder = Path(explicit).expanduser() if explicit is not None else (ref.folder or cand.folder)
    if folder is None:
        raise UsageError("both models are bare .onnx files, so there is no tokenizer to turn the "
                         "data into inputs; pass --tokenizer FOLDER (a bundle or model folder)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"no tokenizer could be loaded from {folder} ({first}); pass "
                         "--tokenizer FOLDER with the model's tokenizer files") from None


def _batches(texts: list[str]) -> list[list[str]]:
    """Rows of similar length together, so padding stays short."""
    ordered = sorted(texts, key=len)
    return [ordered[i : i + BATCH_SIZE] for i in range(0, len(ordered), BATCH_SIZE)]


def _encode(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """Tokenizer inputs for a graph; token_type_ids default to zeros (single segment)."""
    limit = getattr(tokenizer, "model_max_length", MAX_LENGTH)
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="np",
                    max_length=min(MAX_LENGTH, limit if isinstance(limit, int) else MAX_LENGTH))
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    feeds.setdefault("token_type_ids", np.zeros_like(feeds["input_ids"]))
    return feeds
