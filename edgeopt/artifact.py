"""Artifacts passed between stages, and the record each stage leaves.

A stage takes an artifact, a typed config and a work folder, and returns a new
artifact; it never edits its input. Torch-side stages (load and the ``prepare:``
section) pass a :class:`LoadedModel`; export turns it into an :class:`OnnxArtifact`.
The report is built from the records.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class OnnxArtifact:
    """One ONNX model file (weights inline) produced by a pass."""

    path: Path

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def sha256(self) -> str:
        return sha256_file(self.path)


@dataclass(frozen=True)
class LoadedModel:
    """A PyTorch model in eval mode and its tokenizer: what load and every torch-side
    stage pass on. A stage that changes the model returns a new one (a copy), so the
    loaded original stays the parity reference."""

    model: Any
    tokenizer: Any

    @property
    def size_bytes(self) -> int:
        """Bytes of the parameters and buffers (what an fp32 export would carry)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def sha256(self) -> str:
        """sha256 over the state dict, names and bytes in order: equal weights, equal hash."""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()


Artifact = OnnxArtifact | LoadedModel


@dataclass
class PassRecord:
    """What one pass did: config, input/output hashes and sizes, duration, notes."""

    name: str
    config: dict[str, Any]
    seconds: float = 0.0
    input_sha256: str | None = None
    output_sha256: str | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def finish(self, inp: Artifact | None, out: Artifact | None) -> None:
        if inp is not None:
            self.input_sha256, self.input_bytes = inp.sha256(), inp.size_bytes
        if out is not None:
            self.output_sha256, self.output_bytes = out.sha256(), out.size_bytes


@dataclass
class Journal:
    """Ordered pass records of one compile, plus a hook to show stage progress."""

    records: list[PassRecord] = field(default_factory=list)
    on_stage: Callable[[str, str, float | None], None] = lambda stage, state, secs: None

    @contextmanager
    def stage(self, name: str, config: dict[str, Any] | None = None) -> Iterator[PassRecord]:
        """Time a stage and keep its record; the body fills hashes and notes."""
        record = PassRecord(name=name, config=dict(config or {}))
        self.on_stage(name, "start", None)
        start = time.perf_counter()
        try:
            yield record
        except BaseException:
            self.on_stage(name, "failed", time.perf_counter() - start)
            raise
        record.seconds = time.perf_counter() - start
        self.records.append(record)
        self.on_stage(name, "done", record.seconds)
