"""The encoder compile, top to bottom: load, (prepare stages), export, optimize,
quantize, validate, (budget), (diagnose), (accelerator preflight), benchmark, bundle. Each
stage is one function with the core's stage signature; the driver runs them in this order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.artifact import LoadedModel, OnnxArtifact
from edgeopt.compiler.preflight import preflight
from edgeopt.compiler.preflight import wanted as preflight_wanted
from edgeopt.compiler.request import InputRequest, reject_decoder_eval
from edgeopt.compiler.stage import Family, Stage, StageContext
from edgeopt.compiler.writer import bundle
from edgeopt.errors import DataError, RecipeError
from edgeopt.evaldata import EvalData, builtin_sentences, load_eval_data
from edgeopt.families import ENCODER_TASK_NAMES, FEATURE_EXTRACTION, TEXT_CLASSIFICATION
from edgeopt.gates import Gates
from edgeopt.recipe import BenchConfig, ExportConfig, OptimizeConfig, Recipe
from edgeopt.tasks import ENCODE_MAX_LENGTH, ENCODER_TASKS, EncoderTask

MAX_CALIBRATION_ROWS = 256
_BEFORE_BUDGET = "before budget (all quantized)"
# Tasks whose text-in graph has one output row per string (token labels need offsets).
TEXT_INPUT_TASKS = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION)


@dataclass(frozen=True)
class EncoderInputs:
    """Parsed eval rows, and the rows quantizers calibrate on (a deterministic sample)."""

    data: EvalData
    calibration: EvalData


def read_inputs(req: InputRequest) -> EncoderInputs:
    """Eval rows (the file, else the built-in sentences) and calibration rows (the given
    file, else the eval rows), each checked now, before any heavy work."""
    reject_decoder_eval(req)
    # Sentence labels judge classifiers only: a token classifier's labels are per token.
    labelled = req.src.task == TEXT_CLASSIFICATION
    data = _rows(req.eval_data, req.src.label_names if labelled else None, req.max_eval_rows)
    if not labelled and data.labels is not None:
        data = EvalData(data.texts, None, data.source)
    budget = req.budget
    if budget is not None and budget.max_accuracy_drop is not None and data.labels is None:
        raise DataError(f"--max-accuracy-drop needs labelled eval data; {data.source} has no "
                        "'label' column (pass --eval-data FILE with labels, or use --min-agreement)")
    calibration = data if req.calibration_data is None else _rows(
        req.calibration_data, req.src.label_names, None)
    return EncoderInputs(data, calibration.sample(min(len(calibration), MAX_CALIBRATION_ROWS)))


def _rows(value: Any, label_names: tuple[str, ...] | None, max_rows: int | None) -> EvalData:
    if isinstance(value, EvalData):
        data = value
    elif value is not None:
        data = load_eval_data(value, label_names)
    else:
        data = builtin_sentences()
    return data.sample(max_rows) if max_rows is not None else data


@dataclass
class EncoderContext(StageContext):
    """Encoder state the stages share."""

    task: EncoderTask | None = None
    optimized: OnnxArtifact | None = None
    quant_context: Any = None
    reference_outputs: Any = None
    before_budget: OnnxArtifact | None = None

    @property
    def inputs(self) -> EncoderInputs:
        return self.request.inputs


def load(_artifact: None, _config: None, _workdir: Path, ctx: EncoderContext) -> LoadedModel | OnnxArtifact:
    """The PyTorch model; or, for an ONNX source, the graph itself (export is skipped)."""
    from edgeopt.tasks import load_tokenizer, load_torch

    src = ctx.request.src
    ctx.record.config = {"path": str(src.path)}
    if src.onnx_file is None:
        loaded = load_torch(src, trust_remote_code=ctx.request.trust_remote_code)
        ctx.record.notes["class"] = type(loaded.model).__name__
        return loaded
    if ctx.request.recipe.prepare:
        raise RecipeError(f"{src.onnx_file.name} is an ONNX graph; prepare stages change a PyTorch "
                          "model: compile the model folder instead, or drop the prepare section")
    ctx.tokenizer = load_tokenizer(src, trust_remote_code=ctx.request.trust_remote_code)
    ctx.task = ENCODER_TASKS[src.task](src, LoadedModel(None, ctx.tokenizer))
    ctx.exported = OnnxArtifact(src.onnx_file)
    ctx.record.notes["source"] = f"ONNX graph {src.onnx_file.name}: export skipped"
    return ctx.exported


def export(model: LoadedModel, config: ExportConfig, workdir: Path, ctx: EncoderContext
           ) -> OnnxArtifact:
    from edgeopt.passes.export import export_encoder

    ctx.torch, ctx.tokenizer = model, model.tokenizer
    ctx.task = ENCODER_TASKS[ctx.request.src.task](ctx.request.src, model)
    ctx.record.notes["inputs"] = ",".join(ctx.task.input_names)
    ctx.exported = export_encoder(ctx.task, config, workdir)
    return ctx.exported


def optimize(graph: OnnxArtifact, config: OptimizeConfig, workdir: Path, ctx: EncoderContext
             ) -> OnnxArtifact:
    from edgeopt.passes.optimize import optimize_encoder

    texts = ctx.inputs.data.texts
    # Two batches of real rows to check the fusions on; fewer rows give fewer batches
    # (an empty batch does not tokenize).
    feeds = [ctx.task.encode(list(chunk)) for chunk in (texts[:8], texts[8:16]) if chunk]
    # The model as the prepare stages left it (a pruned one has per-layer heads).
    model_config = ctx.request.src.config if ctx.torch is None else ctx.torch.model.config.to_dict()
    ctx.optimized = optimize_encoder(graph, config, workdir, model_config, feeds, ctx.record)
    return ctx.optimized


def quantize(graph: OnnxArtifact, config: Any, workdir: Path, ctx: EncoderContext) -> OnnxArtifact:
    from edgeopt.compiler.quantize import quant_context
    from edgeopt.quant.registry import quantize

    _check_fixed_shape(config, ctx.task)
    calibration = ctx.inputs.calibration
    ctx.quant_context = quant_context(config, tuple(_feeds(ctx.task, calibration)),
                                      cache_dir=workdir / "calibration-cache")
    ctx.record.notes["calibration_rows"] = len(calibration)
    return quantize(graph, config, workdir, ctx.record, ctx.quant_context)


def _gates(recipe: Recipe, ctx: EncoderContext) -> Gates:
    return recipe.gates.for_task(ctx.request.src.task)


def validate(graph: OnnxArtifact, _config: None, _workdir: Path, ctx: EncoderContext) -> OnnxArtifact:
    from edgeopt.validate import onnx_outputs, reference_outputs

    data = ctx.inputs.data
    ctx.record.config = {"rows": len(data)}
    if ctx.torch is not None:
        ctx.reference_outputs = reference_outputs(ctx.task, data)
    else:
        ctx.reference_outputs = onnx_outputs(ctx.task, ctx.exported.path, data)
    ctx.parity = _judge(graph, ctx)
    ctx.record.notes["passed"] = ctx.parity.passed
    return graph


def _judge(graph: OnnxArtifact, ctx: EncoderContext) -> Any:
    from edgeopt.validate import validate_encoder

    recipe = ctx.request.recipe
    result = validate_encoder(ctx.task, graph.path, ctx.inputs.data, ctx.reference_outputs,
                              _gates(recipe, ctx), disabled_optimizers=recipe.disabled_optimizers())
    if ctx.torch is None:
        result.reference = f"the input ONNX graph {ctx.exported.path.name} (onnxruntime, fp32)"
    return result


def budget(graph: OnnxArtifact, _config: None, workdir: Path, ctx: EncoderContext) -> OnnxArtifact:
    """Keep the most sensitive layers in higher precision until the budget's gates hold."""
    from dataclasses import asdict

    from edgeopt.budget import fit_budget

    ctx.record.config = asdict(ctx.request.budget)
    result = fit_budget(ctx.request.budget, config=ctx.request.recipe.quantize,
                        optimized=ctx.optimized, quantized=graph, parity=ctx.parity,
                        evaluate=lambda candidate: _judge(candidate, ctx), context=ctx.quant_context,
                        workdir=workdir / "budget", record=ctx.record)
    ctx.sections.append(result)
    ctx.parity = result.parity
    if result.kept:
        ctx.before_budget = graph
        ctx.sizes[_BEFORE_BUDGET] = result.size_before
    return result.artifact


def text_input(graph: OnnxArtifact, _config: None, workdir: Path, ctx: EncoderContext
               ) -> OnnxArtifact:
    """The final graph with the tokenizer in front (``model.text.onnx``, shipped beside
    ``model.onnx``): its ids checked against transformers on every eval row, its
    outputs judged against PyTorch from the text; that judgement is the compile's."""
    from edgeopt.passes.text_check import TextInputResult, check_text_model
    from edgeopt.passes.tokenizer_graph import (
        CUSTOM_OPS_PACKAGE,
        TEXT_MODEL,
        build_text_model,
        custom_ops_version,
        manifest_entry,
        plan_tokenizer,
    )
    from edgeopt.runtime import fixed_input_shape

    task = ctx.request.src.task
    if task not in TEXT_INPUT_TASKS:
        raise RecipeError(f"text input: {task} is not supported yet (only "
                          f"{', '.join(TEXT_INPUT_TASKS)}); compile without --text-input")
    if fixed_input_shape(graph.path) is not None:
        raise RecipeError(f"text input: {ctx.request.target} fixes the graph's input shape; the "
                          "tokenizer graph pads to the batch's longest row; compile without "
                          "--text-input or for a target with dynamic shapes")
    plan = plan_tokenizer(ctx.tokenizer, min(ENCODE_MAX_LENGTH, ctx.task.max_positions()))
    ctx.record.config = {"tokenizer": plan.kind, "op": plan.op, "max_length": plan.max_length}
    text = build_text_model(graph, plan, ctx.task.input_names, ctx.task.output_name,
                            add_label=task == TEXT_CLASSIFICATION, workdir=workdir)
    recipe = ctx.request.recipe
    checked, parity = check_text_model(text.path, plan, ctx.task, ctx.inputs.data,
                                       ctx.reference_outputs, _gates(recipe, ctx),
                                       disabled_optimizers=recipe.disabled_optimizers())
    token_in = ctx.parity.metrics
    ctx.sections.append(TextInputResult(
        TEXT_MODEL, plan.kind, plan.op, CUSTOM_OPS_PACKAGE, custom_ops_version(), plan.max_length,
        checked["rows_checked"], checked["rows_equal"], dict(token_in), dict(parity.metrics),
        checked.get("label_output_agreement")))
    ctx.record.notes |= checked | {"passed": parity.passed}
    # The app runs the text-in graph: it is what the gates judge from here on.
    ctx.parity = parity
    ctx.bundle_files[TEXT_MODEL] = text.path
    ctx.sizes[TEXT_MODEL] = text.size_bytes
    ctx.manifest["text_input"] = manifest_entry(text.path, plan, checked)
    return graph


def diagnose(graph: OnnxArtifact, _config: None, _workdir: Path, ctx: EncoderContext) -> OnnxArtifact:
    """Where a failed gate's error comes from: the fp32 graph vs the final one when the
    recipe quantized (where error usually enters), else PyTorch vs the final graph."""
    from edgeopt.diagnose import diagnose_compiled

    data = ctx.inputs.data
    ctx.record.config = {"rows": min(len(data), 64)}
    if graph.path != ctx.optimized.path:
        reference = ctx.optimized.path
    else:  # nothing quantized: against PyTorch, or the input graph when that is the source
        reference = ctx.exported.path if ctx.torch is None else None
    try:
        result = diagnose_compiled(ctx.task, data, graph.path, reference=reference)
    except Exception as err:  # advice only: it must never hide the gate result
        ctx.record.notes["diagnose"] = f"failed: {err}"
        return graph
    ctx.record.notes["first_jump"] = result.first_jump.node if result.first_jump else "none"
    ctx.sections.append(result)
    return graph


def benchmark(graph: OnnxArtifact, config: BenchConfig, _workdir: Path, ctx: EncoderContext
              ) -> OnnxArtifact:
    """The bundle, the fp32 graph and PyTorch eager, timed side by side; a graph fixed to
    one input shape (NNAPI, QNN) is timed at that shape."""
    from edgeopt.bench import bench_encoder
    from edgeopt.runtime import fixed_input_shape

    fixed = fixed_input_shape(graph.path)
    seq_len, batch = (fixed[1], fixed[0]) if fixed else (config.seq_len, config.batch)
    ctx.record.config |= {"seq_len": seq_len}
    feeds = ctx.task.fixed_length_feeds(" ".join(ctx.inputs.data.texts[:4]), seq_len, batch)
    subject = "edgeopt " + ctx.request.target
    variants = {subject: graph.path}
    if ctx.before_budget is not None:
        variants[_BEFORE_BUDGET] = ctx.before_budget.path
    if graph.path != ctx.optimized.path:
        variants["onnx-fp32 (optimized)"] = ctx.optimized.path
    recipe = ctx.request.recipe
    eager = ctx.task.export_module() if ctx.torch is not None else None
    result = bench_encoder(feeds, variants, eager, ctx.task.input_names,
                           config, subject=subject, disabled_optimizers=recipe.disabled_optimizers())
    ctx.record.notes["speedup_p50"] = result.speedup
    fitted = next((s for s in ctx.sections if s.key == "budget"), None)
    if fitted is not None and ctx.before_budget is not None:
        fitted.latency_ms = {"before": result.latency[_BEFORE_BUDGET].p50_ms,
                             "after": result.latency[subject].p50_ms}
    ctx.bench = result.to_dict()
    return graph


def ort_format(graph: OnnxArtifact, _config: None, workdir: Path, ctx: EncoderContext) -> OnnxArtifact:
    """model.ort and the reduced-build operator config, checked against the graph on real rows."""
    from edgeopt.compiler.ort_format import OPERATORS_CONFIG, ORT_MODEL, package

    feeds = _feeds(ctx.task, ctx.inputs.data.sample(min(len(ctx.inputs.data), 32)))
    # Conversion re-associates float sums at most: the tolerance the fusions are held to.
    packaged = package(graph.path, workdir / "ort-format", feeds, ctx.request.recipe.optimize.parity_atol)
    ctx.bundle_files |= {ORT_MODEL: packaged.model, OPERATORS_CONFIG: packaged.operators_config}
    ctx.manifest["ort_format"] = packaged.manifest_entry()
    ctx.record.notes |= {"max_abs_diff": packaged.max_abs_diff, "rows": packaged.rows,
                         "ort_mb": round(packaged.model.stat().st_size / 1e6, 2)}
    ctx.sizes["model.ort"] = packaged.model.stat().st_size
    return graph


def _check_fixed_shape(config: Any, task: EncoderTask) -> None:
    shape = getattr(config, "fixed_shape", None)
    if shape is not None and shape[1] > task.max_positions():
        raise RecipeError(f"quantize.fixed_sequence {shape[1]} is longer than the model's longest "
                          f"sequence ({task.max_positions()} tokens); use a recipe with "
                          f"fixed_sequence <= {task.max_positions()}")


def _feeds(task: EncoderTask, data: EvalData, batch: int = 16) -> list[dict[str, Any]]:
    texts = list(data.texts)
    return [task.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]


ENCODER = Family(
    name="encoder",
    tasks=ENCODER_TASK_NAMES,
    read_inputs=read_inputs,
    context=EncoderContext,
    load=Stage("load", load),
    stages=(
        Stage("export", export, config=lambda r: r.export, when=lambda ctx: ctx.exported is None),
        Stage("optimize", optimize, config=lambda r: r.optimize),
        Stage("quantize", quantize, config=lambda r: r.quantize),
        Stage("validate", validate),
        Stage("budget", budget, when=lambda ctx: ctx.request.budget is not None),
        Stage("text-input", text_input, when=lambda ctx: ctx.request.recipe.text_input),
        Stage("diagnose", diagnose, when=lambda ctx: not ctx.parity.passed),
        Stage("preflight", preflight, config=lambda r: r.preflight, when=preflight_wanted),
        Stage("benchmark", benchmark, config=lambda r: r.bench),
        Stage("ort-format", ort_format, when=lambda ctx: ctx.request.recipe.ort_format),
        Stage("bundle", bundle),
    ),
)
