"""The import layers in pyproject.toml hold: a compile reads top to bottom (cli -> api ->
families -> core -> stages -> passes -> base), the encoder and decoder families never
import each other, and providers build on the quantizer's plan types, never the reverse."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists() and shutil.which("lint-imports") is None:
        pytest.skip("import-linter is not installed (it comes with the dev extra)")
    cmd = [str(exe if exe.exists() else "lint-imports"), "--config", str(config), "--no-cache"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
    result = _lint_imports(REPO / "pyproject.toml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_layer_contract_catches_an_upward_import(tmp_path):
    # The same checker on a contract the code is known to break (the core imports the
    # quantizers), so the kept contract above is not kept for want of looking.
    config = tmp_path / "upside-down.toml"
    config.write_text('[tool.importlinter]\nroot_package = "edgeopt"\n\n'
                      '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\n'
                      'layers = ["edgeopt.quant", "edgeopt.compiler"]\n')
    result = _lint_imports(config)
    assert result.returncode == 1 and "BROKEN" in result.stdout
    assert "edgeopt.compiler is not allowed to import edgeopt.quant" in result.stdout


def test_every_module_has_a_layer():
    # A module outside every layer is outside every check: a new one must be placed.
    import pkgutil

    import edgeopt

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {f"edgeopt.{m.name}" for m in pkgutil.iter_modules(edgeopt.__path__)}
    exempt = {"edgeopt.__main__", "edgeopt.data", "edgeopt.recipes"}  # entry point, data folders
    assert modules - exempt - placed == set()
