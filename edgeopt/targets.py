"""Named targets: the YAML recipes shipped in ``recipes/targets/``."""

from __future__ import annotations

from edgeopt.errors import RecipeError
from edgeopt.recipe import Recipe
from edgeopt.recipe_yaml import load_recipe_file
from edgeopt.recipe_yaml import targets_dir as _targets_dir


def target_names() -> list[str]:
    """Names of every shipped target, sorted."""
    return sorted(p.stem for p in _targets_dir().glob("*.yaml"))


def load_target(name: str) -> Recipe:
    """Load a shipped target by name; unknown names list the valid ones."""
    names = target_names()
    if name not in names:
        raise RecipeError(f"unknown target {name!r}; valid targets: {', '.join(names)} "
                          "(or pass --recipe FILE)")
    return load_recipe_file(_targets_dir() / f"{name}.yaml")


def describe_targets() -> list[tuple[str, str]]:
    """(name, one-line description) for every target, reading only the YAML."""
    return [(name, load_target(name).description) for name in target_names()]
