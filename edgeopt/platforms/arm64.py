"""The arm64 onnxruntime, run under qemu-user emulation from this x86 machine.

``make arm64-env`` (``tools/arm64-env.sh``) builds the environment once into
``$EDGEOPT_ARM64_ENV`` (default ``$EDGEOPT_CACHE/arm64``, i.e. ``~/.cache/edgeopt/arm64``):
a Debian arm64 root, the aarch64 onnxruntime and numpy wheels, and ``bin/python3``, which
starts that root's python under ``qemu-aarch64-static -cpu neoverse-n1``. Each run here
is one emulated process that executes :mod:`edgeopt.platforms.worker` on feeds exchanged
as ``.npy`` files. Every time it measures is emulated: about 30x slower than a real core,
never a device speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import PlatformError

ENV_VARIABLE = "EDGEOPT_ARM64_ENV"
SETUP_HINT = "run `make arm64-env` (needs apt-get install qemu-user-static debootstrap)"
WORKER = Path(__file__).with_name("worker.py")
# The CPU the launcher pins qemu to (tools/arm64-env.sh): its default "max" CPU adds SME,
# on which qemu 7.2 computes wrong INT8 MatMuls.
EMULATED_CPU = "qemu-user aarch64, -cpu neoverse-n1"


def env_dir() -> Path:
    """Where the environment lives (or would be built)."""
    explicit = os.environ.get(ENV_VARIABLE)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("EDGEOPT_CACHE", Path.home() / ".cache" / "edgeopt")).expanduser()
    return cache / "arm64"


@dataclass(frozen=True)
class Arm64Env:
    """A built environment: its folder, launcher and what it holds."""

    path: Path
    stamp: str  # "suite=bookworm onnxruntime=1.32.0 numpy=2.4.6 layout=1"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python3"


def find_env(path: Path | None = None) -> Arm64Env:
    """The built environment, or PlatformError saying how to build it."""
    path = path or env_dir()
    ready = path / "READY"
    if not ready.is_file() or not (path / "bin" / "python3").is_file():
        raise PlatformError(f"the arm64 environment is not set up ({path} has no built "
                            f"environment): {SETUP_HINT}")
    return Arm64Env(path, ready.read_text(encoding="utf-8").strip())


def is_ready(path: Path | None = None) -> bool:
    try:
        find_env(path)
    except PlatformError:
        return False
    return True


@dataclass(frozen=True)
class EmulatedRun:
    """Outputs of one emulated process, one array per batch, with its (emulated) timings."""

    outputs: list[np.ndarray]
    machine: str  # what the guest python reports: "aarch64"
    onnxruntime: str
    providers: tuple[str, ...]
    session_seconds: float  # emulated
    run_seconds: tuple[float, ...]  # emulated, per batch
    wall_seconds: float  # the whole emulated process, start-up included

    def timings(self) -> dict[str, float]:
        return {"emulated_session_seconds": self.session_seconds,
                "emulated_run_seconds": float(sum(self.run_seconds)),
                "emulated_process_wall_seconds": self.wall_seconds}


def run_batches(env: Arm64Env, model: Path, batches: Sequence[dict[str, np.ndarray]],
                output: str, threads: int = 2, disabled_optimizers: Sequence[str] = (),
                timeout: float = 3600.0) -> EmulatedRun:
    """Run ``model`` on the arm64 onnxruntime on every feed dict of ``batches`` (all with
    the same input names) and return the output named ``output`` of each."""
    if not batches:
        raise ValueError("no batches to run")
    names = list(batches[0])
    with tempfile.TemporaryDirectory(prefix="edgeopt-arm64-") as tmp:
        job = Path(tmp)
        for i, feeds in enumerate(batches):
            if list(feeds) != names:
                raise ValueError(f"batch {i} feeds {list(feeds)}, batch 0 feeds {names}")
            (job / str(i)).mkdir()
            for k, name in enumerate(names):
                np.save(job / str(i) / f"{k}.npy", np.ascontiguousarray(feeds[name]))
        (job / "job.json").write_text(json.dumps({
            "model": str(Path(model).resolve()), "threads": threads,
            "disabled_optimizers": list(disabled_optimizers), "output": output,
            "inputs": names, "batches": len(batches)}), encoding="utf-8")
        start = time.perf_counter()
        try:
            proc = subprocess.run([str(env.python), str(WORKER), str(job)], capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PlatformError(f"the emulated arm64 run took over {timeout:.0f} s; pass fewer "
                                "rows") from None
        wall = time.perf_counter() - start
        result_file = job / "result.json"
        if proc.returncode != 0 or not result_file.is_file():
            tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise PlatformError(f"the emulated arm64 onnxruntime failed ({tail}); rebuild the "
                                f"environment with `rm -rf {env.path}` and `make arm64-env`")
        result = json.loads(result_file.read_text(encoding="utf-8"))
        outputs = [np.load(job / str(i) / "out.npy") for i in range(len(batches))]
    return EmulatedRun(outputs, result["machine"], result["onnxruntime"],
                       tuple(result["providers"]), float(result["session_seconds"]),
                       tuple(float(s) for s in result["run_seconds"]), wall)
