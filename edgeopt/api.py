"""The library entry point: ``edgeopt.compile``. The CLI is a thin layer over this."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.artifact import Journal
from edgeopt.bundle import check_output
from edgeopt.compiler.request import CompileRequest, InputRequest
from edgeopt.compiler.stage import Family
from edgeopt.errors import ParityError, RecipeError, UsageError
from edgeopt.evaldata import EvalData
from edgeopt.recipe import AccuracyBudget, Recipe
from edgeopt.recipe_yaml import load_recipe_file
from edgeopt.report import Report
from edgeopt.source import inspect_model
from edgeopt.targets import load_target

if TYPE_CHECKING:
    from edgeopt.decoder.validate import DecoderEvalConfig

StageHook = Callable[[str, str, float | None], None]


def resolve_recipe(target: str | None, recipe: str | Path | Recipe | None) -> tuple[str, Recipe]:
    """A target name or a recipe (file or object); exactly one of them."""
    if target and recipe is not None:
        raise RecipeError("pass either a target or a recipe file, not both")
    if recipe is not None:
        r = recipe if isinstance(recipe, Recipe) else load_recipe_file(recipe)
        return r.name, r
    if not target:
        raise RecipeError("no target given; pass --target NAME (see `edgeopt targets`) or "
                          "--recipe FILE")
    return target, load_target(target)


def compile(  # noqa: A001 - the public name the design asks for
    model: str | Path,
    *,
    out: str | Path,
    target: str | None = None,
    recipe: str | Path | Recipe | None = None,
    task: str | None = None,
    eval_data: str | Path | EvalData | None = None,
    max_eval_rows: int | None = None,
    decoder_eval: DecoderEvalConfig | None = None,
    calibration_data: str | Path | EvalData | None = None,
    gates: Mapping[str, float | None] | None = None,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    fail_on_parity: bool = True,
    on_stage: StageHook | None = None,
    base: str | Path | None = None,
    ort_format: bool = False,
    train_data: str | Path | None = None,
    text_input: bool = False,
) -> Report:
    """Compile ``model`` (a folder or a demo name) for ``target`` into the bundle ``out``.

    ``max_accuracy_drop`` (absolute, 0.003 = 0.3 points; needs labelled eval data) and
    ``min_agreement`` (label agreement for classifiers, lowest cosine for embeddings)
    set an accuracy budget: they become gates, and when the quantized model misses them
    the most sensitive layers are kept in higher precision until it holds
    (:mod:`edgeopt.budget`); the report lists what was kept and what it cost.

    ``base`` is the base model folder of a LoRA adapter ``model`` (default: the local
    folder its adapter_config.json names); the merged model is what gets compiled.

    ``decoder_eval`` sets how much text a causal LM is validated on (tokens, window,
    prompts); it is refused for other tasks.

    ``ort_format`` also ships ``model.ort`` and the reduced-build operator config (as the
    recipe's ``ort_format: true`` does).

    ``text_input`` also ships ``model.text.onnx``, the tokenizer in the graph: strings
    in, the model's outputs (and a classifier's ``label``) out (as ``text_input: true``).

    Returns the report. Raises :class:`~edgeopt.errors.UsageError` subclasses on bad
    input before any heavy work, and :class:`~edgeopt.errors.ParityError` (carrying the
    report) when a gate fails and ``fail_on_parity`` is true.
    """
    name, chosen = resolve_recipe(target, recipe)
    src = inspect_model(str(model), task=task, allow_pickle=allow_pickle,
                        trust_remote_code=trust_remote_code, base=base)
    budget = None
    if max_accuracy_drop is not None or min_agreement is not None:
        budget = AccuracyBudget(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
        from edgeopt.quant.registry import supports_budget

        if not supports_budget(chosen.quantize):
            raise RecipeError(f"{name} quantizes with {chosen.quantize.method}, where an accuracy "
                              "budget has nothing to keep in higher precision; use an INT8 target")
        # The budget is judged like any gate (explicit --gate values still win).
        chosen = chosen.with_gates(src.task, **budget.gates(src.task))
    if gates:
        try:
            chosen = chosen.with_gates(src.task, **dict(gates))
        except TypeError as err:
            raise RecipeError(f"unknown gate in overrides: {err}") from None
    out_path = Path(out).expanduser()
    check_output(out_path, force, source=src.path)
    if src.adapter is not None:  # the adapter folder is never written to either
        check_output(out_path, force, source=src.adapter.path)
    family = family_for(src.task)
    if ort_format:
        chosen = dataclasses.replace(chosen, ort_format=True)
    if chosen.ort_format and not any(s.name == "ort-format" for s in family.stages):
        raise RecipeError(f"ort_format: the {family.name} family ({src.task}) has no ORT-format "
                          "packaging yet; drop --ort-format (or ort_format in the recipe)")
    if text_input:
        chosen = dataclasses.replace(chosen, text_input=True)
    if chosen.text_input:
        if not any(s.name == "text-input" for s in family.stages):
            raise RecipeError(f"text_input: the {family.name} family ({src.task}) cannot take text "
                              "yet; drop --text-input (or text_input in the recipe)")
        from edgeopt.passes.tokenizer_graph import extensions

        extensions()  # missing onnxruntime-extensions: one line now, not after the export
    inputs = family.read_inputs(InputRequest(
        src=src, eval_data=eval_data, calibration_data=calibration_data,
        max_eval_rows=max_eval_rows, decoder_eval=decoder_eval, budget=budget))

    from edgeopt.compiler.driver import run_compile

    request = CompileRequest(src=src, recipe=chosen, target=name, inputs=inputs, out=out_path,
                             force=force, fail_on_parity=fail_on_parity,
                             trust_remote_code=trust_remote_code, budget=budget,
                             train_data=_train_data_path(train_data))
    report = run_compile(family, request, Journal(on_stage=on_stage or (lambda *_: None)))
    if not report.passed and fail_on_parity:
        raise ParityError(report.failures, report=report)
    return report


def _train_data_path(value: str | Path | None) -> Path | None:
    """``--train-data`` checked up front: the prepare stages read it much later."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"--train-data {path} does not exist; pass a TSV, CSV, JSONL or TXT "
                         f"file of training text")
    return path


# Family modules by name; each declares one ``Family`` (its stages and adapters).
_FAMILIES = {"encoder": ("edgeopt.encoder.family", "ENCODER"),
             "decoder": ("edgeopt.decoder.family", "DECODER")}


def family_for(task: str) -> Family:
    """The family that compiles ``task`` (imported on first use: it pulls in its passes)."""
    import importlib

    for module, attr in _FAMILIES.values():
        family: Family = getattr(importlib.import_module(module), attr)
        if task in family.tasks:
            return family
    raise UsageError(f"no model family compiles task {task!r}")
