"""The ``prepare:`` section of a recipe: torch-side stages that run between load and
export (layer dropping now; distillation, pruning and vocabulary trimming build here),
one frozen config type per stage, found by its ``stage`` name.

    prepare:
      - stage: keep-layers
        layers: [0, 2, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeopt.recipe import check

# One explicit registry: stage name -> config type. Refuses duplicates.
PREPARE_CONFIGS: dict[str, type] = {}


def register_prepare_config(cls: type) -> type:
    """Add a prepare-stage config type under its ``stage`` name."""
    if cls.stage in PREPARE_CONFIGS:
        raise ValueError(f"prepare stage {cls.stage!r} registered twice")
    PREPARE_CONFIGS[cls.stage] = cls
    return cls


@register_prepare_config
@dataclass(frozen=True)
class KeepLayersConfig:
    """Keep only these transformer layers (0-based, in order): the student a
    distillation starts from, or a cheaper model when the later layers add little."""

    stage: ClassVar[str] = "keep-layers"
    runner: ClassVar[str] = "edgeopt.prepare.keep_layers"  # the module that registers its stage
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check(bool(self.layers), "prepare keep-layers needs layers: [i, j, ...] (0-based)")
        check(all(i >= 0 for i in self.layers), "prepare keep-layers: layer indices must be >= 0")
        check(list(self.layers) == sorted(set(self.layers)),
              "prepare keep-layers: list each layer once, in increasing order")
