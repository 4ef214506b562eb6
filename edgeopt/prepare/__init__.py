"""Torch-side stages (the recipe's ``prepare:`` section): a :class:`LoadedModel` in, a new
:class:`LoadedModel` out, between load and export. One module per stage registers its
function here under its config type (from :mod:`edgeopt.recipe_prepare`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from edgeopt.errors import RecipeError

PrepareFn = Callable[..., Any]  # (LoadedModel, config, workdir, ctx) -> LoadedModel

# Config type -> its stage function; each config type names the module that registers it
# (``runner``), imported on first use.
_RUNNERS: dict[type, PrepareFn] = {}


def register_prepare(config_type: type) -> Callable[[PrepareFn], PrepareFn]:
    """Register the function that runs ``config_type``'s stage."""
    def wrap(fn: PrepareFn) -> PrepareFn:
        if config_type in _RUNNERS:
            raise ValueError(f"a prepare stage for {config_type.__name__} is already registered")
        _RUNNERS[config_type] = fn
        return fn

    return wrap


def runner_for(config: Any) -> PrepareFn:
    """The registered function for ``config``'s type."""
    importlib.import_module(type(config).runner)  # registers its stage on import
    fn = _RUNNERS.get(type(config))
    if fn is None:
        raise RecipeError(f"no prepare stage registered for {getattr(config, 'stage', config)!r}")
    return fn
