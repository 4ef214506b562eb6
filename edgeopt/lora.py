"""PEFT LoRA adapters: a folder of low-rank deltas on a base model, compiled as one model.

:func:`inspect_adapter` reads ``adapter_config.json`` and the weights header (no torch),
finds the base (the local folder the config names, or ``--base``), checks the base like
any model folder and that the adapter's task fits it. :func:`merge_adapter` applies the
adapter with peft and folds it into the base's weights, so everything after loading (export,
parity against PyTorch, benchmark) sees one ordinary model: the merged one.

peft is optional (``pip install 'edgeopt[lora]'``); nothing here imports it at import time.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeopt.errors import ModelError, UsageError
from edgeopt.families import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TEXT_GENERATION
from edgeopt.source import (
    SourceModel,
    _check_safetensors,
    _read_config,
    detect_task,
    inspect_model,
    resolve_model_arg,
    sha256_file,
)

ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
INSTALL_HINT = "pip install 'edgeopt[lora]'"

# peft task types edgeopt compiles, and the task each one is. None (a bare PeftModel)
# takes the base's task.
PEFT_TASKS = {
    "SEQ_CLS": TEXT_CLASSIFICATION,
    "FEATURE_EXTRACTION": FEATURE_EXTRACTION,
    "CAUSAL_LM": TEXT_GENERATION,
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter folder, as read before loading any weights."""

    path: Path
    weights_file: Path
    uses_pickle: bool
    task_type: str | None  # peft's name (SEQ_CLS, ...), None when the config has none
    r: int | None
    lora_alpha: float | None
    target_modules: Any  # a list of module names or a regex string, as peft wrote it
    modules_to_save: tuple[str, ...]
    base_named: str | None  # base_model_name_or_path as written in adapter_config.json
    tokenizer_path: Path  # the adapter folder when it has a tokenizer, else the base

    def weights_sha256(self) -> str:
        """sha256 of the adapter weights file (what ``sha256sum`` prints for it)."""
        return sha256_file(self.weights_file)

    def describe(self) -> dict[str, Any]:
        """The adapter's identity, for the report's source section and the manifest."""
        return {"path": str(self.path), "weights_file": self.weights_file.name,
                "weights_sha256": self.weights_sha256(), "peft_type": "LORA",
                "task_type": self.task_type, "r": self.r, "lora_alpha": self.lora_alpha,
                # peft keeps a set: sorted, so the same adapter always reads the same.
                "target_modules": sorted(self.target_modules) if isinstance(
                    self.target_modules, (list, tuple)) else self.target_modules,
                "modules_to_save": list(self.modules_to_save),
                "base_model_name_or_path": self.base_named,
                "tokenizer_from": "adapter" if self.tokenizer_path == self.path else "base"}


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def inspect_adapter(
    path: Path,
    base: str | Path | None = None,
    task: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> SourceModel:
    """The base model's :class:`SourceModel`, carrying the adapter in ``adapter``."""
    if not is_adapter_folder(path):
        raise ModelError(f"--base applies to LoRA adapter folders; {path} has no {ADAPTER_CONFIG}: "
                         "drop --base")
    config = _read_adapter_config(path)
    if importlib.util.find_spec("peft") is None:
        raise ModelError(f"{path} is a LoRA adapter, which needs peft to merge: {INSTALL_HINT}")
    peft_type = str(config.get("peft_type", ""))
    if peft_type != "LORA":
        raise ModelError(f"{path} is a {peft_type or 'untyped'} peft adapter; edgeopt merges LoRA "
                         "only: merge it yourself (merge_and_unload, save_pretrained) and compile "
                         "that folder")
    adapter_task = _adapter_task(path, config.get("task_type"))
    if task is not None and adapter_task is not None and task != adapter_task:
        raise ModelError(f"{path} is a {config['task_type']} adapter ({adapter_task}); --task "
                         f"{task} does not fit it: drop --task")
    weights_file, uses_pickle = _adapter_weights(path, allow_pickle)
    modules_to_save = tuple(str(m) for m in config.get("modules_to_save") or ())
    base_path = _find_base(path, config.get("base_model_name_or_path"), base)
    if is_adapter_folder(base_path):
        raise ModelError(f"base {base_path} of {path} is itself an adapter folder; pass --base "
                         "with the model folder the adapter was trained on")
    _check_fit(path, config.get("task_type"), adapter_task, base_path, weights_file,
               modules_to_save)
    src = inspect_model(str(base_path), task=task or adapter_task, allow_pickle=allow_pickle,
                        trust_remote_code=trust_remote_code)
    has_tokenizer = any((path / f).is_file() for f in _TOKENIZER_FILES)
    adapter = LoraAdapter(
        path=path, weights_file=weights_file, uses_pickle=uses_pickle,
        task_type=config.get("task_type"), r=config.get("r"), lora_alpha=config.get("lora_alpha"),
        target_modules=config.get("target_modules"), modules_to_save=modules_to_save,
        base_named=config.get("base_model_name_or_path"),
        tokenizer_path=path if has_tokenizer else src.path,
    )
    return replace(src, adapter=adapter)


def merge_adapter(model: Any, adapter: LoraAdapter) -> Any:
    """Apply ``adapter`` to the loaded base ``model`` with peft and fold it into the weights."""
    try:
        from peft import PeftModel
        from peft.utils import get_peft_model_state_dict, load_peft_weights
    except ImportError:
        raise ModelError(f"{adapter.path} is a LoRA adapter, which needs peft: {INSTALL_HINT}") from None
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False)
        # peft only warns when the base has adapter weights the file lacks; those would
        # stay at their initial values (a silently different model), so refuse instead.
        # save_embedding_layers=False: "auto" asks the hub about the base model it names.
        expected = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
        missing = sorted(set(expected) - set(load_peft_weights(str(adapter.path), device="cpu")))
        if missing:
            raise ModelError(f"adapter {adapter.path} does not fit its base: {len(missing)} of its "
                             f"weights have no match (first: {missing[0]}); pass --base with the "
                             "model it was trained on")
        merged = peft_model.merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not apply adapter {adapter.path}: {first}") from None
    return merged.eval()


def _read_adapter_config(path: Path) -> dict[str, Any]:
    cfg = path / ADAPTER_CONFIG
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{cfg} is not valid JSON ({err}); re-save the adapter") from None
    if not isinstance(data, dict):
        raise ModelError(f"{cfg} must hold a JSON object; re-save the adapter")
    return data


def _adapter_task(path: Path, task_type: Any) -> str | None:
    if task_type is None:
        return None
    if task_type not in PEFT_TASKS:
        raise ModelError(f"{path}: adapter task_type {task_type!r} is not supported; supported: "
                         f"{', '.join(PEFT_TASKS)}")
    return PEFT_TASKS[task_type]


def _adapter_weights(path: Path, allow_pickle: bool) -> tuple[Path, bool]:
    safe = path / SAFE_WEIGHTS
    if safe.is_file():
        _check_safetensors(safe)
        return safe, False
    pickle = path / PICKLE_WEIGHTS
    if not pickle.is_file():
        raise ModelError(f"{path} has no adapter weights ({SAFE_WEIGHTS}); pass a folder written "
                         "by PeftModel.save_pretrained")
    if not allow_pickle:
        raise ModelError(f"{path} has only pickle adapter weights ({PICKLE_WEIGHTS}), which can "
                         "run arbitrary code when loaded; re-save with safe_serialization=True, "
                         "or pass --allow-pickle if you trust them")
    return pickle, True


def _find_base(path: Path, named: Any, override: str | Path | None) -> Path:
    """``--base`` when given (a folder or demo name), else the local folder the config names."""
    if override is not None:
        return resolve_model_arg(str(override))
    if not named:
        raise ModelError(f"adapter {path} does not name its base model (no base_model_name_or_path "
                         "in adapter_config.json); pass --base DIR with the model it was trained on")
    candidate = Path(str(named)).expanduser()
    if not candidate.is_dir():
        raise ModelError(f"adapter {path} names base {named!r}, which is not a local folder (the "
                         "hub is never used); pass --base DIR with that model's folder")
    return candidate


def _check_fit(path: Path, task_type: Any, adapter_task: str | None, base: Path,
               weights_file: Path, modules_to_save: tuple[str, ...]) -> None:
    """The adapter's task must be the base's; a classifier adapter may bring its own head
    (modules_to_save) onto a base without one (a plain encoder, a masked LM)."""
    if adapter_task is None:
        return
    cfg = _read_config(base)
    archs = cfg.get("architectures") or []
    architecture = str(archs[0]) if archs else ""
    library = "sentence_transformers" if (base / "modules.json").is_file() else "transformers"
    try:
        base_task: str | None = detect_task(architecture, str(cfg.get("model_type", "")), library)
    except UsageError:
        base_task = None  # e.g. a masked LM: no head of a compiled task
    if base_task == adapter_task:
        return
    headless = adapter_task == TEXT_CLASSIFICATION and base_task in (None, FEATURE_EXTRACTION)
    if headless and _saves_head(weights_file, modules_to_save):
        return
    why = ", which has no classification head, and the adapter saves none" if headless else ""
    raise ModelError(f"adapter {path} is {task_type} ({adapter_task}) but its base {base} is "
                     f"{architecture or 'an unknown architecture'} ({base_task or 'no compiled task'})"
                     f"{why}; pass --base with the model the adapter was trained on")


def _saves_head(weights_file: Path, modules_to_save: tuple[str, ...]) -> bool:
    """Whether the adapter file holds full weights of a modules_to_save module (the head)."""
    if not modules_to_save or weights_file.suffix != ".safetensors":
        return bool(modules_to_save)
    with open(weights_file, "rb") as fh:
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    for key in header:
        parts = key.split(".")
        if "lora_" not in key and any(m in parts for m in modules_to_save):
            return True
    return False
