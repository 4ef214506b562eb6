"""``edgeopt verify BUNDLE --platform arm64``: the bundle on another platform's onnxruntime
against the x86 run (and PyTorch, when the source model is at hand), on real rows.

The same feeds go to every side: the x86 onnxruntime here, the aarch64 onnxruntime under
qemu-user (:mod:`edgeopt.platforms.arm64`), and the PyTorch source model. Classifiers are
judged by label agreement, embeddings by cosine, causal LMs by next-token agreement and
logit cosine at every position of a few prompts (teacher-forced: the greedy choice after
each prefix). The verdict is the arm64-vs-x86 comparison; the PyTorch one shows the
quantization error both share, which the compile's own gates already judged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bundle import bundle_file, read_manifest
from edgeopt.errors import ParityError, UsageError
from edgeopt.evaldata import EvalData
from edgeopt.families import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TEXT_GENERATION
from edgeopt.verify.compare import compare_outputs, judge
from edgeopt.verify.feeds import Batches, decoder_batches, encoder_batches, eval_data_of

PLATFORMS = ("arm64",)
TASKS = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION, TEXT_GENERATION)
DEFAULT_ROWS = {TEXT_CLASSIFICATION: 200, FEATURE_EXTRACTION: 200, TEXT_GENERATION: 8}


@dataclass(frozen=True)
class Comparison:
    """One pair of sides on the same rows: the platform against x86 or PyTorch, or x86
    against PyTorch (the error the x86 kernels add on their own)."""

    pair: str  # "arm64 vs x86 onnxruntime 1.32.0", "arm64 vs PyTorch fp32 (source)", ...
    metrics: dict[str, float]


@dataclass(frozen=True)
class VerifyResult:
    """What ``edgeopt verify`` found; ``failures`` empty means the platform agrees."""

    bundle: str
    target: str
    task: str
    platform: str  # "arm64 (emulated: ...)"
    rows: int  # inputs (encoders) or prompts (causal LMs)
    positions: int  # rows judged: inputs, or every prompt position
    data: str
    comparisons: tuple[Comparison, ...]
    thresholds: dict[str, float]
    failures: tuple[str, ...]
    timings: dict[str, float]
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "target": self.target, "task": self.task,
                "platform": self.platform, "rows": self.rows, "positions": self.positions,
                "data": self.data, "passed": self.passed, "thresholds": self.thresholds,
                "failures": list(self.failures),
                "comparisons": [{"pair": c.pair, **c.metrics} for c in self.comparisons],
                "timings": self.timings, "notes": list(self.notes)}

    def to_markdown(self) -> str:
        keys = _shown_metrics(self.task)
        lines = [f"# verify {self.bundle} on {self.platform}", "",
                 f"{self.task}, target {self.target}; {self.rows} rows of {self.data}"
                 + (f" ({self.positions} positions)" if self.task == TEXT_GENERATION else ""), "",
                 "| outputs | " + " | ".join(keys) + " |",
                 "|---|" + "---|" * len(keys)]
        for c in self.comparisons:
            lines.append(f"| {c.pair} | " + " | ".join(_fmt(k, c.metrics.get(k)) for k in keys) + " |")
        lines += ["", "Timings (the arm64 ones are emulated under qemu-user, not device speed):"]
        lines += [f"- {k}: {v:.2f}" for k, v in self.timings.items()]
        lines += [f"- note: {n}" for n in self.notes]
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.failures)
        lines += ["", f"arm64 vs x86: {verdict}", ""]
        return "\n".join(lines)


def _shown_metrics(task: str) -> list[str]:
    head = {TEXT_CLASSIFICATION: ["label_agreement", "disagreeing"],
            TEXT_GENERATION: ["next_token_agreement", "disagreeing"]}.get(task, [])
    return [*head, "cosine_min", "cosine_mean", "max_abs_error", "sqnr_db"]


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "disagreeing" else f"{value:.4f}"


def verify_bundle(
    bundle: str | Path,
    platform: str = "arm64",
    data: EvalData | None = None,
    rows: int | None = None,
    source: str | Path | None = None,
    threads: int = 2,
    min_agreement: float = 0.995,
    min_cosine: float = 0.999,
) -> VerifyResult:
    """Run ``bundle`` on ``platform`` and on the x86 onnxruntime (and PyTorch when the
    source is at hand) on the same rows; judge the platform against x86.

    ``data`` defaults to the eval data the bundle was validated on (its report says
    which); ``rows`` to 200 inputs (8 prompts for a causal LM). Raises PlatformError when
    the platform's environment is not built.
    """
    from edgeopt.platforms.arm64 import EMULATED_CPU, find_env, run_batches

    if platform not in PLATFORMS:
        raise UsageError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    env = find_env()  # before any heavy work: the one-line "run make arm64-env"
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    task = manifest.get("task")
    if task not in TASKS:
        raise UsageError(f"verify compares {', '.join(TASKS)} bundles; {bundle} holds {task}")
    rows = rows or DEFAULT_ROWS[task]
    if rows < 1:
        raise UsageError(f"rows must be >= 1, got {rows}")
    model = bundle_file(bundle, manifest["model"])
    disabled = tuple((manifest.get("session_options") or {}).get("disabled_optimizers") or ())
    data = data if data is not None else eval_data_of(bundle, manifest, task)
    sample = data.sample(rows)
    batches = (decoder_batches(bundle, manifest, sample) if task == TEXT_GENERATION
               else encoder_batches(bundle, manifest, sample))

    x86, x86_seconds = _x86_outputs(model, batches, threads, disabled)
    emulated = run_batches(env, model, batches.runs, batches.output, threads, disabled)
    arm = batches.assemble(emulated.outputs)
    import onnxruntime as ort

    x86_name = f"x86 onnxruntime {ort.__version__}"
    comparisons = [Comparison(f"arm64 vs {x86_name}", compare_outputs(task, x86, arm))]
    torch_ref, note = _torch_outputs(bundle, manifest, batches, source)
    if torch_ref is not None:  # each build's own error against the source, side by side
        comparisons += [Comparison("arm64 vs PyTorch fp32 (source)",
                                   compare_outputs(task, torch_ref, arm)),
                        Comparison(f"{x86_name} vs PyTorch fp32 (source)",
                                   compare_outputs(task, torch_ref, x86))]
    thresholds, failures = judge(task, comparisons[0].metrics, min_agreement, min_cosine)
    timings = {"x86_run_seconds": x86_seconds, **emulated.timings()}
    if x86_seconds > 0:
        timings["emulation_slowdown_x"] = timings["emulated_run_seconds"] / x86_seconds
    return VerifyResult(
        str(bundle), str(manifest.get("target")), task,
        f"arm64 (emulated: {EMULATED_CPU}; onnxruntime {emulated.onnxruntime} "
        f"{emulated.machine}, {threads} threads)",
        len(sample), len(x86), sample.source, tuple(comparisons), thresholds, tuple(failures),
        timings, (note,) if note else ())


def _x86_outputs(model: Path, batches: Batches, threads: int, disabled: tuple[str, ...]
                 ) -> tuple[np.ndarray, float]:
    from edgeopt.runtime import make_session

    session = make_session(model, threads=threads, disabled_optimizers=disabled)
    start = time.perf_counter()
    outs = [session.run([batches.output], feeds)[0] for feeds in batches.runs]
    return batches.assemble(outs), time.perf_counter() - start


def _torch_outputs(bundle: Path, manifest: dict[str, Any], batches: Batches,
                   source: str | Path | None) -> tuple[np.ndarray | None, str]:
    """PyTorch on the same rows, or None and why not."""
    from edgeopt.verify.feeds import source_at_hand

    src, why = source_at_hand(bundle, manifest, source)
    if src is None:
        return None, f"no PyTorch comparison: {why}"
    from edgeopt.tasks import load_torch

    loaded = load_torch(src)
    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    if src.task == TEXT_GENERATION:
        from edgeopt.decoder.reference import TorchCausalLM

        lm = TorchCausalLM(loaded.model)
        run = lambda feeds: lm.logits(feeds["input_ids"])  # noqa: E731
    else:
        from edgeopt.tasks import ENCODER_TASKS

        enc = ENCODER_TASKS[src.task](src, loaded)
        run = lambda feeds: enc.torch_outputs(  # noqa: E731
            {n: feeds.get(n, np.zeros_like(feeds["input_ids"])) for n in enc.input_names})
    return batches.assemble([run(f) for f in batches.torch_feeds], torch=True), ""


def raise_on_failure(result: VerifyResult) -> None:
    """ParityError (exit 1) with every broken threshold."""
    if result.failures:
        raise ParityError([f"arm64 vs x86 {f}" for f in result.failures], report=result)
