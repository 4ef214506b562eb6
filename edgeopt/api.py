"""The library entry point: ``edgeopt.compile``. The CLI is a thin layer over this."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.artifact import Journal
from edgeopt.bundle import check_output
from edgeopt.errors import DataError, ParityError, RecipeError, UsageError
from edgeopt.evaldata import EvalData, builtin_sentences, load_eval_data
from edgeopt.recipe import AccuracyBudget, Recipe
from edgeopt.recipe_yaml import load_recipe_file
from edgeopt.report import Report
from edgeopt.source import inspect_model
from edgeopt.targets import load_target

if TYPE_CHECKING:
    from edgeopt.decoder.validate import DecoderEvalConfig

MAX_CALIBRATION_ROWS = 256

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
        from edgeopt.passes.quantize import supports_budget

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
    if src.adapter is not None:  # LoRA hook: the adapter folder is never written to either
        check_output(out_path, force, source=src.adapter.path)
    eval_path = Path(eval_data) if isinstance(eval_data, (str, Path)) else None
    if decoder_eval is not None and src.task != "text-generation":
        raise UsageError(f"decoder eval settings (--max-eval-tokens) apply to text-generation "
                         f"models, not {src.task}; use --max-eval-rows")
    if src.task == "text-generation":
        # Decoders measure perplexity on plain text; the file is read by their pipeline.
        if eval_path is not None and not eval_path.is_file():
            raise DataError(f"eval data {eval_path} does not exist; pass a plain-text file")
        data = builtin_sentences()
    else:
        data = _eval_data(eval_data, src.label_names, max_eval_rows)
    if budget is not None and budget.max_accuracy_drop is not None and data.labels is None:
        raise DataError(f"--max-accuracy-drop needs labelled eval data; {data.source} has no "
                        "'label' column (pass --eval-data FILE with labels, or use --min-agreement)")

    # Calibration: the given file, else the eval rows; a deterministic sample of <= 256.
    # Decoders read a given file as plain text, like their eval data.
    calibration_path = None
    if src.task == "text-generation" and isinstance(calibration_data, (str, Path)):
        calibration_path = Path(calibration_data)
        if not calibration_path.is_file():
            raise DataError(f"calibration data {calibration_path} does not exist; pass a plain-text file")
        calibration_data = None
    calibration = data if calibration_data is None else _eval_data(
        calibration_data, src.label_names, None)
    calibration = calibration.sample(min(len(calibration), MAX_CALIBRATION_ROWS))

    journal = Journal(on_stage=on_stage or (lambda *_: None))
    if src.task == "text-generation":
        from edgeopt.decoder.pipeline import compile_decoder

        run = functools.partial(compile_decoder, eval_config=decoder_eval)
    else:
        from edgeopt.pipeline import compile_encoder as run
    from edgeopt.pipeline import CompileRequest

    report = run(
        CompileRequest(src=src, recipe=chosen, target=name, data=data, eval_path=eval_path,
                       calibration=calibration, calibration_path=calibration_path,
                       out=out_path, force=force,
                       fail_on_parity=fail_on_parity, trust_remote_code=trust_remote_code,
                       budget=budget),
        journal,
    )
    if not report.passed and fail_on_parity:
        raise ParityError(report.failures, report=report)
    return report


def _eval_data(
    eval_data: str | Path | EvalData | None, label_names: tuple[str, ...] | None,
    max_rows: int | None,
) -> EvalData:
    if isinstance(eval_data, EvalData):
        data = eval_data
    elif eval_data is not None:
        data = load_eval_data(eval_data, label_names)
    else:
        data = builtin_sentences()
    if max_rows is not None:
        data = data.sample(max_rows)
    return data
