"""The source model: find it, check it is safe to load, and detect its task.

Nothing here imports torch; the checks read ``config.json`` and the safetensors
headers only, so bad input fails in well under a second. The source folder is only
ever read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.artifact import sha256_file
from edgeopt.errors import ModelError
from edgeopt.families import (
    ENCODER_TYPES,
    FEATURE_EXTRACTION,
    TASKS,
    TEXT_CLASSIFICATION,
    TEXT_GENERATION,
    TOKEN_CLASSIFICATION,
    model_types_for,
)
from edgeopt.onnx_source import check_tokenizer, external_files, find_onnx, onnx_task, read_config

if TYPE_CHECKING:
    from edgeopt.lora import LoraAdapter

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Tasks whose outputs are label logits, named by config.json's id2label.
_LABELLED_TASKS = (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION)


@dataclass(frozen=True)
class SourceModel:
    """What edgeopt knows about the model folder before loading any weights."""

    path: Path
    task: str
    model_type: str
    architecture: str
    library: str  # "transformers" or "sentence_transformers"
    weight_files: tuple[Path, ...]
    uses_pickle: bool
    pooling: str | None  # "mean" | "cls" | "max" for embeddings
    normalize: bool  # sentence-transformers Normalize module present
    label_names: tuple[str, ...] | None  # classifiers, per sentence or per token
    config: dict[str, Any]
    # Set when the source is an ONNX graph (export is skipped; it is the parity reference).
    onnx_file: Path | None = None
    # Set when the folder given was a LoRA adapter on this base model (edgeopt.lora).
    adapter: LoraAdapter | None = None

    def weights_sha256(self) -> str:
        """sha256 over every weight file, in name order (the source's identity)."""
        digest = hashlib.sha256()
        for path in sorted(self.weight_files):
            digest.update(path.name.encode())
            digest.update(bytes.fromhex(sha256_file(path)))
        return digest.hexdigest()

    def weights_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)


def resolve_model_arg(arg: str) -> Path:
    """A path to a model folder, or the short name of an installed demo model."""
    from edgeopt import zoo

    path = Path(arg).expanduser()
    if path.exists():
        return path
    if arg in zoo.DEMO_MODELS:
        return zoo.resolve_demo(arg)
    raise ModelError(
        f"model {arg!r} not found: pass a Hugging Face model folder or one of the demo "
        f"names ({', '.join(sorted(zoo.DEMO_MODELS))})"
    )


def inspect_model(
    arg: str,
    task: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    base: str | Path | None = None,
) -> SourceModel:
    """Resolve ``arg`` and check the folder is a model edgeopt can safely compile.

    A LoRA adapter folder is inspected with its base (``base`` overrides the one it names).
    """
    path = resolve_model_arg(arg)
    from edgeopt import lora

    if base is not None or lora.is_adapter_folder(path):
        return lora.inspect_adapter(path, base, task, allow_pickle, trust_remote_code)
    onnx_file = find_onnx(path)
    if onnx_file is not None:
        return _inspect_onnx(onnx_file, task)
    if not path.is_dir():
        raise ModelError(f"{path} is a file; pass the model folder that holds config.json")
    config = _read_config(path)
    if "auto_map" in config and not trust_remote_code:
        raise ModelError(
            f"{path} needs custom code from the model folder (config.json has auto_map); "
            "review it, then pass --trust-remote-code to run it"
        )
    model_type = str(config.get("model_type", ""))
    archs = config.get("architectures") or []
    architecture = str(archs[0]) if archs else ""
    weight_files, uses_pickle = _weight_files(path, allow_pickle)
    library = "sentence_transformers" if (path / "modules.json").is_file() else "transformers"
    if task is not None and task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    task = task or detect_task(architecture, model_type, library)
    _check_supported(path, task, model_type, architecture)
    pooling, normalize = _sentence_transformers_pooling(path) if task == FEATURE_EXTRACTION else (
        None, False)
    return SourceModel(
        path=path,
        task=task,
        model_type=model_type,
        architecture=architecture,
        library=library,
        weight_files=weight_files,
        uses_pickle=uses_pickle,
        pooling=pooling,
        normalize=normalize,
        label_names=_label_names(config) if task in _LABELLED_TASKS else None,
        config=config,
    )


def _inspect_onnx(onnx_file: Path, task: str | None) -> SourceModel:
    """An ONNX graph and the tokenizer (and optional config.json) in its folder."""
    folder = onnx_file.parent
    config = read_config(folder)
    task = onnx_task(onnx_file, config, task)
    check_tokenizer(folder, onnx_file)
    external = external_files(onnx_file)
    archs = config.get("architectures") or []
    return SourceModel(
        path=folder, task=task, model_type=str(config.get("model_type", "onnx")),
        architecture=str(archs[0]) if archs else "ONNX graph", library="onnx",
        weight_files=(onnx_file, *external), uses_pickle=False, pooling=None, normalize=False,
        label_names=_label_names(config) if task == TEXT_CLASSIFICATION else None,
        config=config, onnx_file=onnx_file)


def _read_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{path} is not a model folder (no config.json); pass the folder "
                         "written by save_pretrained")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{cfg} is not valid JSON ({err}); re-save the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"{cfg} must hold a JSON object; re-save the model")
    return data


def _weight_files(path: Path, allow_pickle: bool) -> tuple[tuple[Path, ...], bool]:
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        for file in safetensors:
            _check_safetensors(file)
        return tuple(safetensors), False
    pickles = sorted(p for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if not pickles:
        raise ModelError(f"{path} has no weights (*.safetensors); pass a folder written by "
                         "save_pretrained")
    if not allow_pickle:
        raise ModelError(
            f"{path} has only pickle weights ({pickles[0].name}), which can run arbitrary code "
            "when loaded; convert them to safetensors, or pass --allow-pickle if you trust them"
        )
    return tuple(pickles), True


def _check_safetensors(file: Path) -> None:
    """Parse the header and check the data section is complete: catches corrupt files."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(header_len))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ModelError(f"weights file {file} is corrupt ({err}); re-download or re-save the "
                         "model") from None
    if 8 + header_len + end != size:
        raise ModelError(f"weights file {file} is corrupt (expected {8 + header_len + end} bytes, "
                         f"found {size}: truncated?); re-download or re-save the model")


def detect_task(architecture: str, model_type: str, library: str) -> str:
    """Task from the architecture name; sentence-transformers folders embed."""
    if library == "sentence_transformers":
        return FEATURE_EXTRACTION
    if architecture.endswith("ForSequenceClassification"):
        return TEXT_CLASSIFICATION
    if architecture.endswith("ForTokenClassification"):
        return TOKEN_CLASSIFICATION
    if architecture.endswith(("ForCausalLM", "LMHeadModel")):
        return TEXT_GENERATION
    if architecture.endswith("Model") and model_type in ENCODER_TYPES:
        return FEATURE_EXTRACTION
    raise ModelError(
        f"cannot tell the task of architecture {architecture or '(none)'!r}; pass --task "
        f"({', '.join(TASKS)})"
    )


def _check_supported(path: Path, task: str, model_type: str, architecture: str) -> None:
    family = model_types_for(task)
    if model_type not in family:
        raise ModelError(
            f"{path}: model_type {model_type or '(missing)'!r} ({architecture or 'no architecture'}) "
            f"is not supported for {task}; supported: {', '.join(family)}"
        )


def _sentence_transformers_pooling(path: Path) -> tuple[str, bool]:
    """Pooling and normalization a sentence-transformers folder declares (mean otherwise)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        pooling = "mean"
        normalize = False
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Pooling"):
                cfg = json.loads((path / module["path"] / "config.json").read_text("utf-8"))
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    pooling = "max"
            elif kind.endswith("Normalize"):
                normalize = True
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelError(f"{modules_file} or its pooling config is malformed ({err})") from None
    return pooling, normalize


def _label_names(config: dict[str, Any]) -> tuple[str, ...] | None:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        return tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
    except (ValueError, TypeError):
        return None
