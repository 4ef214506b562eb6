"""Recipes from YAML: parse, check every key and type, build the frozen dataclasses of
:mod:`edgeopt.recipe`. Errors name the file and the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from edgeopt.errors import RecipeError
from edgeopt.recipe import (
    QUANT_CONFIGS,
    BenchConfig,
    ExportConfig,
    Gates,
    OptimizeConfig,
    PreflightConfig,
    Recipe,
    TaskGates,
    check,
)
from edgeopt.recipe_prepare import PREPARE_CONFIGS

_SECTIONS: dict[str, type] = {
    "export": ExportConfig,
    "optimize": OptimizeConfig,
    "bench": BenchConfig,
    "preflight": PreflightConfig,
}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation; lists become tuples."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is tuple:
        check(isinstance(value, (list, tuple)), f"{where} must be a list")
        return tuple(_coerce(v, typing.get_args(annotation)[0], where) for v in value)
    if annotation is bool:
        check(isinstance(value, bool), f"{where} must be true or false")
    elif annotation is int:
        check(isinstance(value, int) and not isinstance(value, bool), f"{where} must be an integer")
    elif annotation is float:
        check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            f"{where} must be a number",
        )
        value = float(value)
    elif annotation is str:
        check(isinstance(value, str), f"{where} must be a string")
    return value


def build_config(cls: type, data: Any, where: str) -> Any:
    """The frozen dataclass ``cls`` from a parsed YAML mapping: every key known, every
    required one given, every value of its field's type (errors name ``where``)."""
    check(isinstance(data, dict), f"{where} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    check(not unknown, f"unknown key(s) in {where}: {', '.join(unknown)} "
           f"(known: {', '.join(sorted(known))})")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    check(not missing, f"{where} needs {', '.join(missing)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _build_gates(data: Any) -> TaskGates:
    check(isinstance(data, dict), "gates must be a mapping of task -> gates")
    tasks = {f.name.replace("_", "-") for f in dataclasses.fields(TaskGates)}
    unknown = sorted(set(data) - tasks)
    check(not unknown, f"unknown task(s) under gates: {', '.join(unknown)} "
           f"(known: {', '.join(sorted(tasks))})")
    return TaskGates(**{
        task.replace("-", "_"): build_config(Gates, values or {}, f"gates.{task}")
        for task, values in data.items()
    })


def _build_prepare(data: Any) -> tuple[Any, ...]:
    check(isinstance(data, list), "prepare must be a list of stages (- stage: NAME ...)")
    stages = []
    for i, item in enumerate(data):
        where = f"prepare[{i}]"
        check(isinstance(item, dict) and isinstance(item.get("stage"), str),
              f"{where} must be a mapping with a 'stage' name")
        item = dict(item)
        name = item.pop("stage")
        check(name in PREPARE_CONFIGS, f"unknown {where}.stage {name!r} "
              f"(known: {', '.join(sorted(PREPARE_CONFIGS))})")
        stages.append(build_config(PREPARE_CONFIGS[name], item, f"{where} ({name})"))
    return tuple(stages)


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    """Build a validated :class:`Recipe` from parsed YAML; errors name ``source``."""
    try:
        check(isinstance(data, dict), "a recipe must be a YAML mapping")
        data = dict(data)
        kwargs: dict[str, Any] = {}
        for key in ("name", "description"):
            check(isinstance(data.get(key), str), f"'{key}' (a string) is required")
            kwargs[key] = data.pop(key)
        if "version" in data:
            kwargs["version"] = _coerce(data.pop("version"), int, "version")
        if "ort_format" in data:
            kwargs["ort_format"] = _coerce(data.pop("ort_format"), bool, "ort_format")
        if "text_input" in data:
            kwargs["text_input"] = _coerce(data.pop("text_input"), bool, "text_input")
        if "providers" in data:
            kwargs["providers"] = _coerce(data.pop("providers"), tuple[str, ...], "providers")
        for key, cls in _SECTIONS.items():
            if key in data:
                kwargs[key] = build_config(cls, data.pop(key) or {}, key)
        if "gates" in data:
            kwargs["gates"] = _build_gates(data.pop("gates") or {})
        for key in ("quantize", "decoder_quantize"):
            if key in data:
                q = dict(data.pop(key) or {})
                method = q.pop("method", "none")
                check(method in QUANT_CONFIGS, f"unknown {key}.method {method!r} "
                       f"(known: {', '.join(sorted(QUANT_CONFIGS))})")
                kwargs[key] = build_config(QUANT_CONFIGS[method], q, key)
        if "prepare" in data:
            kwargs["prepare"] = _build_prepare(data.pop("prepare") or [])
        check(not data, f"unknown top-level key(s): {', '.join(sorted(data))}")
        return Recipe(**kwargs)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None


def targets_dir() -> Path:
    """Where the shipped targets' YAML lives (``recipes/targets/``)."""
    from importlib import resources

    return Path(str(resources.files("edgeopt.recipes.targets")))


def load_recipe_file(path: str | Path) -> Recipe:
    """Read a recipe YAML file (what ``--recipe FILE`` passes). ``extends: TARGET`` starts
    from a shipped target: each section the file gives is merged key by key over the
    target's (a ``quantize`` with another ``method`` replaces it), lists are replaced."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; pass a YAML file or use --target")
    data = _read_yaml(path)
    if isinstance(data, dict) and "extends" in data:
        data = dict(data)
        base = data.pop("extends")
        names = sorted(p.stem for p in targets_dir().glob("*.yaml"))
        if base not in names:
            raise RecipeError(f"{path}: extends {base!r} is not a shipped target; valid targets: "
                              f"{', '.join(names)}")
        data = _merged(_read_yaml(targets_dir() / f"{base}.yaml"), data)
    return recipe_from_dict(data, source=str(path))


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise RecipeError(f"{path}: not valid YAML ({first})") from None


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge per key (recursively), anything else
    replaces; a section naming a different ``method`` starts afresh."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and \
                value.get("method", old.get("method")) == old.get("method"):
            out[key] = _merged(old, value)
        else:
            out[key] = value
    return out
