"""The encoder compile, top to bottom: load, export, optimize, quantize, validate,
benchmark, bundle. Each stage leaves a record in the journal; the report is built from
those records.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeopt import __version__
from edgeopt.artifact import Journal, OnnxArtifact, PassRecord
from edgeopt.bench import bench_encoder
from edgeopt.bundle import StagedBundle, write_manifest
from edgeopt.diagnosis import Diagnosis
from edgeopt.errors import RecipeError
from edgeopt.evaldata import EvalData
from edgeopt.gates import ParityResult
from edgeopt.passes.export import export_encoder
from edgeopt.passes.optimize import optimize_encoder
from edgeopt.passes.quantize import QuantContext, quantize
from edgeopt.recipe import AccuracyBudget, Recipe
from edgeopt.report import Report
from edgeopt.runtime import fixed_input_shape
from edgeopt.source import SourceModel
from edgeopt.tasks import ENCODER_TASKS, EncoderTask, load_torch
from edgeopt.validate import reference_outputs, validate_encoder


@dataclass(frozen=True)
class CompileRequest:
    """Everything a compile needs, already checked by :mod:`edgeopt.api`."""

    src: SourceModel
    recipe: Recipe
    target: str
    # Encoders: parsed eval rows. Decoders read ``eval_path`` as plain text instead.
    data: EvalData
    eval_path: Path | None
    # Rows quantizers calibrate on (a deterministic sample, never more than 256 rows).
    calibration: EvalData
    out: Path
    force: bool
    fail_on_parity: bool
    trust_remote_code: bool = False
    # Keep the most sensitive layers in higher precision until this holds (None: no search).
    budget: AccuracyBudget | None = None
    # Decoders: a plain-text calibration file (None: text after the tokens parity scores).
    calibration_path: Path | None = None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"edgeopt": __version__}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "optimum", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def compile_encoder(req: CompileRequest, journal: Journal) -> Report:
    """Run every stage for a classifier or embedding model and write the bundle."""
    started = time.perf_counter()
    recipe = req.recipe
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as tmp:
        work = Path(tmp)
        with journal.stage("load", {"path": str(req.src.path)}) as rec:
            loaded = load_torch(req.src, trust_remote_code=req.trust_remote_code)
            task: EncoderTask = ENCODER_TASKS[req.src.task](req.src, loaded)
            rec.notes["inputs"] = ",".join(task.input_names)
        with journal.stage("export", {"opset": recipe.export.opset}) as rec:
            exported = export_encoder(task, recipe.export, work)
            rec.finish(None, exported)
        check_feeds = [task.encode(list(req.data.texts[:8])), task.encode(list(req.data.texts[8:16]))]
        check_feeds = [f for f in check_feeds if f["input_ids"].size]
        with journal.stage("optimize", {"fusions": recipe.optimize.fusions}) as rec:
            optimized = optimize_encoder(exported, recipe.optimize, work, req.src.config,
                                         check_feeds, rec)
            rec.finish(exported, optimized)
        _check_fixed_shape(recipe, task)
        with journal.stage("quantize") as rec:
            context = QuantContext(calibration=tuple(_feeds(task, req.calibration)),
                                   cache_dir=work / "calibration-cache")
            rec.notes["calibration_rows"] = len(req.calibration)
            final = quantize(optimized, recipe.quantize, work, rec, context)
            rec.finish(optimized, final)
        gates = recipe.gates.for_task(req.src.task)
        with journal.stage("validate", {"rows": len(req.data)}) as rec:
            reference = reference_outputs(task, req.data)
            parity = validate_encoder(task, final.path, req.data, reference, gates,
                                      disabled_optimizers=recipe.disabled_optimizers())
            rec.notes["passed"] = parity.passed
        budget = None
        if req.budget is not None:
            from edgeopt.budget import fit_budget

            def evaluate(candidate: OnnxArtifact) -> ParityResult:
                return validate_encoder(task, candidate.path, req.data, reference, gates,
                                        disabled_optimizers=recipe.disabled_optimizers())

            with journal.stage("budget", asdict(req.budget)) as rec:
                budget = fit_budget(req.budget, config=recipe.quantize, optimized=optimized,
                                    quantized=final, parity=parity, evaluate=evaluate,
                                    context=context, workdir=work / "budget", record=rec)
                rec.finish(final, budget.artifact)
            before_budget, final, parity = final, budget.artifact, budget.parity
        diagnosis = None
        if not parity.passed:
            with journal.stage("diagnose", {"rows": min(len(req.data), 64)}) as rec:
                diagnosis = _diagnose(task, req.data, optimized, final, rec)
        # A graph fixed to one input shape (NNAPI, QNN) is timed at that shape.
        fixed = fixed_input_shape(final.path)
        seq_len, batch = (fixed[1], fixed[0]) if fixed else (recipe.bench.seq_len, recipe.bench.batch)
        with journal.stage("benchmark", {"seq_len": seq_len}) as rec:
            feeds = task.fixed_length_feeds(" ".join(req.data.texts[:4]), seq_len, batch)
            subject = "edgeopt " + req.target
            variants = {subject: final.path}
            if budget is not None and budget.kept:
                variants[_BEFORE_BUDGET] = before_budget.path
            if final.path != optimized.path:
                variants["onnx-fp32 (optimized)"] = optimized.path
            bench = bench_encoder(feeds, variants, task.export_module(), task.input_names,
                                  recipe.bench, subject=subject,
                                  disabled_optimizers=recipe.disabled_optimizers())
            rec.notes["speedup_p50"] = bench.speedup
            if budget is not None and budget.kept:
                budget.latency_ms = {"before": bench.latency[_BEFORE_BUDGET].p50_ms,
                                     "after": bench.latency[subject].p50_ms}
        report = build_report(req, journal, parity, bench.to_dict(), exported, final)
        if budget is not None:
            if budget.kept:
                report.sizes[_BEFORE_BUDGET] = budget.size_before
            report.extra["Accuracy budget"] = budget.to_markdown()
            report.extra["budget"] = budget.to_dict()
        if diagnosis is not None:
            report.extra["Where the error comes from"] = diagnosis.to_markdown()
            report.extra["diagnosis"] = diagnosis.to_dict()
        with journal.stage("bundle", {"out": str(req.out)}):
            keep_model = parity.passed or not req.fail_on_parity
            report.seconds = time.perf_counter() - started
            _write_bundle(req, task, final, parity, report, keep_model)
    return report


_BEFORE_BUDGET = "before budget (all quantized)"


def _check_fixed_shape(recipe: Recipe, task: EncoderTask) -> None:
    shape = getattr(recipe.quantize, "fixed_shape", None)
    if shape is not None and shape[1] > task.max_positions():
        raise RecipeError(f"quantize.fixed_sequence {shape[1]} is longer than the model's longest "
                          f"sequence ({task.max_positions()} tokens); use a recipe with "
                          f"fixed_sequence <= {task.max_positions()}")


def _diagnose(task: EncoderTask, data: EvalData, optimized: OnnxArtifact, final: OnnxArtifact,
              rec: PassRecord) -> Diagnosis | None:
    """Where a failed gate's error comes from: the fp32 graph vs the final one when the
    recipe quantized (where error usually enters), else PyTorch vs the final graph."""
    from edgeopt.diagnose import diagnose_compiled

    try:
        result = diagnose_compiled(
            task, data, final.path, reference=None if final.path == optimized.path else optimized.path)
    except Exception as err:  # advice only: it must never hide the gate result
        rec.notes["diagnose"] = f"failed: {err}"
        return None
    rec.notes["first_jump"] = result.first_jump.node if result.first_jump else "none"
    return result


def _feeds(task: EncoderTask, data: EvalData, batch: int = 16) -> list[dict[str, Any]]:
    texts = list(data.texts)
    return [task.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]


def _write_bundle(req: CompileRequest, task: EncoderTask, model: OnnxArtifact,
                  parity: ParityResult, report: Report, keep_model: bool,
                  extra_manifest: Mapping[str, Any] | None = None) -> None:
    """Stage the bundle and rename it into place. A failed gate keeps only the report.

    ``extra_manifest`` adds task-specific sections (a decoder's cache io) to the manifest;
    ``task`` only needs ``loaded.tokenizer``.
    """
    stage = StagedBundle(req.out)
    try:
        if keep_model:
            shutil.copyfile(model.path, stage.path("model.onnx"))
            task.loaded.tokenizer.save_pretrained(str(stage.dir))
            report.bundle = str(req.out)
        stage.write_text("report.json", report.to_json() + "\n")
        stage.write_text("report.md", report.to_markdown())
        if keep_model:
            manifest = _manifest(req, task, stage.path("model.onnx"), parity, report)
            write_manifest(stage, {**manifest, **(extra_manifest or {})})
        stage.commit(req.force)
    except BaseException:
        stage.discard()
        raise


def _manifest(req: CompileRequest, task: EncoderTask, model_path: Path, parity: ParityResult,
              report: Report) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    max_len = getattr(task.loaded.tokenizer, "model_max_length", None)
    return {
        "edgeopt_version": __version__,
        "target": req.target,
        "task": req.src.task,
        "model": "model.onnx",
        "inputs": [_value_info(v) for v in graph.input],
        "outputs": [_value_info(v) for v in graph.output],
        "label_names": list(req.src.label_names) if req.src.label_names else None,
        "pooling": req.src.pooling,
        "normalized": req.src.normalize if req.src.task == "feature-extraction" else None,
        "max_sequence_length": int(max_len) if isinstance(max_len, int) and max_len < 1e6 else None,
        "providers": list(req.recipe.providers),
        # Set when the graph takes one input shape only (NNAPI, QNN): pad every input to it.
        "fixed_input_shape": _fixed_shape_info(model_path),
        # Session settings the app must use for the measured speed (see the report).
        "session_options": {"disabled_optimizers": list(req.recipe.disabled_optimizers())},
        "parity": "passed" if parity.passed else "failed",
        "source_weights_sha256": report.source["weights_sha256"],
        # LoRA hook (edgeopt.lora): the adapter merged into the source, else null.
        "source_adapter": report.source.get("adapter"),
        "versions": report.versions,
        "recipe": report.recipe,
    }


def _fixed_shape_info(model_path: Path) -> dict[str, int] | None:
    shape = fixed_input_shape(model_path)
    return None if shape is None else {"batch": shape[0], "sequence": shape[1]}


def _value_info(v: Any) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": dims}


def build_report(req: CompileRequest, journal: Journal, parity: ParityResult,
                 bench: dict[str, Any], exported: OnnxArtifact, final: OnnxArtifact,
                 extra: dict[str, Any] | None = None) -> Report:
    """The report of a compile, from its pass records, parity result and benchmark."""
    return Report(
        status="PASSED" if parity.passed else "FAILED",
        target=req.target,
        task=req.src.task,
        source=_source_info(req.src),
        recipe=req.recipe.to_dict(),
        passes=[_record_dict(r) for r in journal.records],
        parity=parity.to_dict(),
        bench=bench,
        sizes={"source weights": req.src.weights_bytes(), "onnx fp32": exported.size_bytes,
               "bundle model.onnx": final.size_bytes},
        versions=library_versions(),
        seconds=0.0,
        failures=parity.failures,
        extra=dict(extra or {}),
    )


def _source_info(src: SourceModel) -> dict[str, Any]:
    return {"path": str(src.path), "architecture": src.architecture, "model_type": src.model_type,
            "library": src.library, "weights_sha256": src.weights_sha256(),
            "weight_files": [p.name for p in src.weight_files],
            # LoRA hook: path, sha256, r, alpha, target modules of the merged adapter.
            "adapter": src.adapter.describe() if src.adapter else None}


def _record_dict(r: Any) -> dict[str, Any]:
    return asdict(r)

