"""Stages and families: the two things the driver runs.

A stage has one signature: ``run(artifact, config, workdir, ctx) -> artifact``. The
artifact is a :class:`~edgeopt.artifact.LoadedModel` before export and an
:class:`~edgeopt.artifact.OnnxArtifact` after; the config is the stage's typed section
of the recipe; ``ctx.record`` is the stage's record, which the stage fills with notes.
A stage returns its input when it only measures (validate, benchmark) and a new
artifact when it transforms; it never edits its input.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.artifact import Journal, LoadedModel, OnnxArtifact, PassRecord
from edgeopt.compiler.request import CompileRequest, InputRequest
from edgeopt.gates import ParityResult
from edgeopt.recipe import Recipe
from edgeopt.report import Section


@dataclass
class StageContext:
    """What the stages of one compile share. Families subclass it for their own state
    (the task adapter, the decoder's cache layout); these fields are what the core's
    report builder and bundle writer read."""

    request: CompileRequest
    journal: Journal
    workdir: Path
    record: PassRecord = field(default_factory=lambda: PassRecord("", {}))
    # The torch model parity is judged against: the loaded one, after the prepare stages
    # (None when the source is an ONNX graph, which is then the reference itself).
    torch: LoadedModel | None = None
    # The model as loaded, before any prepare stage: the teacher distillation and
    # recovery learn from (set by the driver after load).
    teacher: LoadedModel | None = None
    # The last distill stage's student (a recovery's teacher with ``teacher: distilled``).
    distilled: LoadedModel | None = None
    tokenizer: Any = None  # what the bundle ships
    # The float ONNX graph (the export, or the user's .onnx file): the size baseline.
    exported: OnnxArtifact | None = None
    parity: ParityResult | None = None
    bench: dict[str, Any] | None = None
    sections: list[Section] = field(default_factory=list)
    # Extra rows of the report's size table (e.g. the model before an accuracy budget).
    sizes: dict[str, int] = field(default_factory=dict)
    # Family sections of the manifest (a decoder's cache layout).
    manifest: dict[str, Any] = field(default_factory=dict)
    # Files the bundle ships beside model.onnx: bundle name -> file in the work folder.
    bundle_files: dict[str, Path] = field(default_factory=dict)
    report: Any = None  # the Report, once the bundle stage built it
    started: float = field(default_factory=time.perf_counter)


StageFn = Callable[[Any, Any, Path, StageContext], Any]


def _no_config(_recipe: Recipe) -> None:
    return None


def _always(_ctx: StageContext) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One named step: its function, how it finds its config in the recipe, and when it
    runs (a budget search only with a budget, a diagnosis only after a failed gate)."""

    name: str
    run: StageFn
    config: Callable[[Recipe], Any] = _no_config
    when: Callable[[StageContext], bool] = _always


@dataclass(frozen=True)
class Family:
    """A model family (encoders, decoders): the tasks it compiles, how it reads its data,
    its context type, its load stage and the stages after the recipe's prepare section."""

    name: str
    tasks: tuple[str, ...]
    read_inputs: Callable[[InputRequest], Any]
    context: type[StageContext]
    load: Stage
    stages: tuple[Stage, ...]


def describe_config(config: Any) -> dict[str, Any]:
    """A stage config as the plain dict its record keeps (``method`` included)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
        for name in ("method", "stage"):
            if hasattr(type(config), name):
                data = {name: getattr(type(config), name), **data}
        return data
    return dict(config)
