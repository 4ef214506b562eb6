"""``edgeopt bench`` top to bottom: open the bundle, check each provider really runs here,
then per (threads, batch, sequence) time every provider and PyTorch eager interleaved, and
measure cold start and peak memory in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt.bench import time_samples
from edgeopt.benchgrid import coldstart
from edgeopt.benchgrid.inputs import BenchBundle, FeedMaker
from edgeopt.benchgrid.result import EAGER, GridPoint, GridResult
from edgeopt.benchgrid.runner import make_runner
from edgeopt.benchgrid.spec import GridSpec
from edgeopt.bundle import replace_files
from edgeopt.errors import ModelError, UsageError
from edgeopt.providers import Provider, open_session, parse_providers
from edgeopt.stats import Summary

Log = Callable[[str], None]


def simulated(detail: str) -> str | None:
    """``"simulator"`` or ``"emulator"`` when a provider's own availability line says it
    runs as one here (onnxruntime-qnn's HTP backend on x86_64), else None."""
    found = re.search(r"\b(simulat|emulat)\w*", detail, re.IGNORECASE)
    return None if found is None else ("simulator" if found.group(1).lower() == "simulat" else "emulator")


def bench_bundle(path: str | Path, spec: GridSpec, source: str | Path | None = None,
                 log: Log | None = None) -> GridResult:
    """Time the bundle at ``path`` over ``spec``'s grid (see :mod:`edgeopt.benchgrid`)."""
    import onnxruntime as ort

    log = log or (lambda _msg: None)
    bundle = BenchBundle.open(path)
    providers = parse_providers(",".join(spec.providers))
    details = {}
    for p in providers:  # fails now, with one line, when a provider is not really here
        open_session(bundle.model, p, threads=1, disabled_optimizers=bundle.disabled_optimizers)
        details[p.name] = p.availability().detail
    eager, eager_info = _eager(bundle, source) if spec.eager else (None, {"note": "not asked for"})
    result = GridResult(
        bundle=str(bundle.path), files=bundle.files(), warmup=spec.warmup, repeats=spec.repeats,
        providers=[{"name": p.name, "label": p.label, "detail": details[p.name],
                    "simulated": simulated(details[p.name])} for p in providers],
        machine={"cpus": os.cpu_count(), "platform": platform.platform(),
                 "onnxruntime": ort.__version__, "load_average_start": _load()},
        memory_method=coldstart.MEMORY_METHOD if spec.cold_start else "not measured",
        eager=eager_info)
    feeds_for = FeedMaker(bundle)
    for threads, batch, seq in spec.shapes():
        log(f"threads {threads}, batch {batch}, seq {seq}")
        result.points += _point(bundle, providers, details, eager, spec, threads, batch, seq,
                                feeds_for(batch, seq))
    result.machine["load_average_end"] = _load()
    return result


def _point(bundle: BenchBundle, providers: list[Provider], details: dict[str, str],
           eager: Any, spec: GridSpec, threads: int, batch: int, seq: int,
           feeds: dict[str, Any]) -> list[GridPoint]:
    """Every provider (and eager) at one shape, timed interleaved."""
    shape = dict(threads=threads, batch=batch, seq=seq)
    fixed = bundle.fixed_shape
    if fixed is not None and fixed != (batch, seq):
        note = f"the graph is fixed to batch {fixed[0]}, sequence {fixed[1]}"
        return [GridPoint(p.name, **shape, status="skipped", note=note) for p in providers]
    variants: dict[str, Callable[[], Any]] = {}
    failed: dict[str, str] = {}
    for p in providers:
        try:
            session = open_session(bundle.model, p, threads=threads,
                                   disabled_optimizers=bundle.disabled_optimizers)
            run = make_runner(session, p, feeds)
            run()  # a shape the graph cannot take fails here, not inside the timing
            variants[p.name] = run
        except Exception as err:  # onnxruntime's own errors: this point fails, the grid goes on
            failed[p.name] = _first_line(err)
    if eager is not None:
        eager_run = eager(threads, feeds)
        if eager_run is not None:
            variants[EAGER] = eager_run
    try:
        samples = time_samples(variants, spec.warmup, spec.repeats)
    finally:
        if eager is not None:
            eager.restore()
    eager_ms = Summary.of(samples[EAGER]).scaled(1e3) if EAGER in samples else None
    points = []
    for p in providers:
        if p.name in failed:
            points.append(GridPoint(p.name, **shape, status="failed", note=failed[p.name]))
            continue
        cold = (coldstart.measure(bundle.model, p.name, threads, feeds, bundle.disabled_optimizers)
                if spec.cold_start else None)
        points.append(GridPoint(p.name, **shape, status="ok", simulated=simulated(details[p.name]),
                                latency_ms=Summary.of(samples[p.name]).scaled(1e3),
                                eager_ms=eager_ms, cold_start=cold))
    return points


class _Eager:
    """The source model in PyTorch eager, fp32, run on the same feeds at the same threads."""

    def __init__(self, module: Any, input_names: list[str]) -> None:
        import torch

        self.module, self.input_names = module, input_names
        self.previous_threads = torch.get_num_threads()

    def __call__(self, threads: int, feeds: dict[str, Any]) -> Callable[[], Any] | None:
        import torch

        torch.set_num_threads(threads)
        args = [torch.from_numpy(feeds[n]) for n in self.input_names]

        def run() -> Any:
            with torch.inference_mode():
                return self.module(*args)

        try:
            run()
        except Exception:  # e.g. a sequence past the position table: no eager figure here
            return None
        return run

    def restore(self) -> None:
        import torch

        torch.set_num_threads(self.previous_threads)


def _eager(bundle: BenchBundle, source: str | Path | None) -> tuple[_Eager | None, dict[str, Any]]:
    """The source in PyTorch when it is at hand: ``source``, else the folder the bundle's
    report recorded; a recorded one that is gone or changed is skipped with the reason."""
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch

    explicit = source is not None
    path = Path(source) if explicit else bundle.recorded_source()
    if path is None:
        return None, {"note": "not timed: the bundle records no source; pass --source MODEL_DIR"}
    if not path.exists():
        if explicit:
            raise ModelError(f"--source {path} does not exist; pass the model folder the bundle "
                             "was compiled from")
        return None, {"note": f"not timed: the recorded source {path} is not on this machine; "
                              "pass --source MODEL_DIR"}
    src = inspect_model(str(path))
    expected = bundle.manifest.get("source_weights_sha256")
    if src.onnx_file is not None:
        return None, {"note": f"not timed: the source {path} is an ONNX graph, not a PyTorch model"}
    if expected and src.weights_sha256() != expected:
        message = (f"the weights in {path} are not the ones this bundle was compiled from "
                   "(sha256 differs from the manifest's source_weights_sha256)")
        if explicit:
            raise UsageError(f"--source: {message}")
        return None, {"note": f"not timed: {message}"}
    task = ENCODER_TASKS[src.task](src, load_torch(src))
    note = f"{path}, weights sha256 as the manifest records"
    if bundle.manifest.get("recipe", {}).get("prepare"):
        note += "; the recipe's prepare stages are not applied to it"
    return _Eager(task.export_module(), task.input_names), {"source": str(path), "note": note}


def write_to_report(path: str | Path, result: GridResult) -> None:
    """Put ``result`` into the bundle's report.json (its typed sections) and report.md
    (replacing an earlier grid), and update the manifest's hashes of both."""
    bundle = Path(path)
    report = json.loads((bundle / "report.json").read_text(encoding="utf-8"))
    report.setdefault("sections", {})[result.key] = result.to_dict()
    markdown = (bundle / "report.md").read_text(encoding="utf-8")
    heading = f"## {result.title}"
    if heading in markdown:  # drop the earlier grid up to the next section
        before, _, after = markdown.partition(heading)
        rest = after.split("\n## ", 1)
        markdown = before.rstrip("\n") + ("\n\n## " + rest[1] if len(rest) > 1 else "\n")
    markdown = markdown.rstrip("\n") + f"\n\n{heading}\n\n{result.to_markdown()}"
    replace_files(bundle, {"report.json": json.dumps(report, indent=2) + "\n",
                           "report.md": markdown})


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
