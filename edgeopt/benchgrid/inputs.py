"""What ``edgeopt bench`` needs from a bundle: its graph, how the app opens it, the shapes
it takes, the source it came from, and feeds of any batch and sequence length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle import bundle_file, read_manifest
from edgeopt.errors import UsageError
from edgeopt.families import TEXT_GENERATION


@dataclass(frozen=True)
class BenchBundle:
    """A bundle as the benchmark reads it (manifest checked, hashes verified)."""

    path: Path
    model: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> BenchBundle:
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.get("task") == TEXT_GENERATION:
            raise UsageError(f"{path} is a text-generation bundle; `edgeopt bench` times one "
                             "forward pass of an encoder (prefill and decode with a KV cache are "
                             "timed by benchmarks/bench_decoders.py)")
        return cls(path, bundle_file(path, manifest.get("model", "model.onnx")), manifest)

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.manifest["inputs"]]

    @property
    def disabled_optimizers(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("session_options", {}).get("disabled_optimizers", []))

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        fixed = self.manifest.get("fixed_input_shape")
        return None if not fixed else (int(fixed["batch"]), int(fixed["sequence"]))

    def files(self) -> dict[str, int]:
        """Bytes of each graph file the bundle ships (model.onnx, model.ort)."""
        names = [self.model.name] + ([self.manifest["ort_format"]["model"]]
                                     if self.manifest.get("ort_format") else [])
        return {n: int(self.manifest["files"][n]["bytes"]) for n in names if n in self.manifest["files"]}

    def recorded_source(self) -> Path | None:
        """The source model folder the compile read, as its report recorded it."""
        report = self.path / "report.json"
        if not report.is_file():
            return None
        recorded = json.loads(report.read_text(encoding="utf-8")).get("source", {}).get("path")
        return Path(recorded) if recorded else None


class FeedMaker:
    """Feeds of ``batch`` rows of ``seq`` tokens: the built-in sentences through the
    bundle's own tokenizer (real token ids, as an app would send)."""

    def __init__(self, bundle: BenchBundle) -> None:
        from transformers import AutoTokenizer

        from edgeopt.evaldata import builtin_sentences

        self.tokenizer = AutoTokenizer.from_pretrained(str(bundle.path), local_files_only=True)
        self.text = " ".join(builtin_sentences().texts[:8])
        self.names = bundle.input_names

    def __call__(self, batch: int, seq: int) -> dict[str, np.ndarray]:
        from edgeopt.tasks import fixed_length_feeds

        feeds = fixed_length_feeds(self.tokenizer, self.text, seq, batch, self.names)
        return {k: v for k, v in feeds.items() if k in self.names}
