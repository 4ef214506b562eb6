"""The table's rows: which worker runs each variant, with what it loads."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peers.artifacts import PEERS_DIR, REPO, PeersEnv
from peers.client import Worker

EDGEOPT_PREFIX = "edgeopt "
TORCH = "pytorch eager fp32"
GENAI = "onnxruntime-genai int4 (acc 4)"
LLAMA_PREFIX = "llama.cpp "


@dataclass(frozen=True)
class Variant:
    """One row: its label, the runtime behind it and how its worker starts."""

    name: str
    runtime: str
    argv: tuple[str, ...]
    load: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def start(self, log_dir: Path) -> Worker:
        slug = "".join(c if c.isalnum() else "-" for c in self.name).strip("-")
        return Worker(self.name, self.argv, log_dir / f"worker-{slug}.log", self.env)


def _edgeopt_env() -> dict[str, str]:
    # This checkout's edgeopt, whatever an editable install in the venv points at.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def edgeopt_variant(target: str, bundle: Path, threads: int) -> Variant:
    return Variant(EDGEOPT_PREFIX + target, "edgeopt", (sys.executable, str(PEERS_DIR / "edgeopt_worker.py")),
                   {"bundle": str(bundle), "threads": threads}, _edgeopt_env())


def torch_variant(model: Path, threads: int) -> Variant:
    return Variant(TORCH, "pytorch", (sys.executable, str(PEERS_DIR / "torch_worker.py")),
                   {"model": str(model), "threads": threads}, _edgeopt_env())


def genai_variant(model_dir: Path, env: PeersEnv, threads: int) -> Variant:
    return Variant(GENAI, "onnxruntime-genai", (str(env.python), str(PEERS_DIR / "genai_worker.py")),
                   {"model_dir": str(model_dir), "threads": threads})


def llama_variant(ftype: str, gguf: Path, env: PeersEnv, threads: int, context: int, vocab: int) -> Variant:
    # libuv's default 4-thread pool competes with llama.cpp's compute threads: on 2
    # cores it halves the decode rate.
    return Variant(LLAMA_PREFIX + ftype.upper(), "llama.cpp",
                   ("node", str(PEERS_DIR / "llama_worker.mjs"), str(env.node_dir)),
                   {"model": str(gguf), "threads": threads, "context": context, "vocab": vocab},
                   {"UV_THREADPOOL_SIZE": "1"})
