"""Helpers the tests import: cheap recipes and ../shared paths that skip when absent."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEOPT_SHARED", REPO.parent / "shared"))


def fast_recipe(name: str, **bench):
    """A shipped target made cheap for tests: a short benchmark, no torch baseline.

    Read from this checkout's ``recipes/targets``: an edgeopt installed from another
    checkout (an editable install shared by worktrees) maps its own recipes in.
    """
    from edgeopt.recipe import BenchConfig
    from edgeopt.recipe_yaml import load_recipe_file
    from edgeopt.targets import load_target

    load_target(name)  # unknown names fail as they do for users
    opts = {"seq_len": 16, "warmup": 1, "repeats": 3, "torch_baseline": False} | bench
    recipe = load_recipe_file(REPO / "recipes" / "targets" / f"{name}.yaml")
    return dataclasses.replace(recipe, bench=BenchConfig(**opts))


def shared_path(rel: str) -> Path:
    """A file under ../shared, or skip the test saying why."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"needs ../shared/{rel} (real data and weights; CI has it, a fresh clone "
                    "does not)")
    return path


def nbits_projections(path) -> dict[str, int]:
    """``{projection node name: bits}`` over a graph's MatMulNBits, merged nodes split into
    their members (``a/MatMulNBits+b/MatMulNBits``)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return {member: onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits"))
            for n in graph.node if n.op_type == "MatMulNBits" for member in n.name.split("+")}
