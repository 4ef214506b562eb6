"""The distill stage (and its ``recover`` alias): a student initialised from the model,
trained on the teacher's outputs over the --train-data text.

The teacher is the model as loaded (``ctx.teacher``), or with ``teacher: distilled``
the student of the last distill stage (``ctx.distilled``), so after pruning or vocabulary
trimming a recovery learns from a model with the full shapes, read through its own
(untrimmed) tokenizer. Rows without a label learn from the teacher alone. Runs are checkpointed in a
folder keyed by everything that decides the result (input and teacher weights, config,
training file): rerunning the same compile resumes an interrupted run, or reuses a
finished one without training again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.artifact import LoadedModel
from edgeopt.errors import RecipeError
from edgeopt.prepare import register_prepare
from edgeopt.prepare.distill_data import Collator, RowDataset, Side, compare, kind_of, outputs, vocab_map
from edgeopt.prepare.student import build_student, choose_layers, hidden_map
from edgeopt.prepare.train_text import labelled_mask, read_train_text
from edgeopt.recipe_prepare import DistillConfig, RecoverConfig

FINAL = "final.pt"
DONE = "done.json"


@register_prepare(RecoverConfig)
@register_prepare(DistillConfig)
def distill(model: LoadedModel, config: DistillConfig, _workdir: Path, ctx: Any) -> LoadedModel:
    import torch

    stage = config.stage
    src = ctx.request.src
    kind = kind_of(src.task, stage)
    rows = read_train_text(ctx.request.train_data, stage, config.max_rows, config.seed)
    original = _teacher(config, ctx, model)
    depth = int(model.model.config.num_hidden_layers)
    layers = choose_layers(config.layers, depth, stage)
    student_model = build_student(model.model, layers, config.ffn_width, stage)
    pooling, normalize = (src.pooling or "mean", bool(src.normalize)) if kind == "embed" else ("mean", False)
    teacher = Side(original.model, original.tokenizer, kind, pooling, normalize)
    student = Side(student_model, model.tokenizer, kind, pooling, normalize)
    use_teacher = config.kl_weight > 0 or config.hidden_weight > 0
    spec_map = hidden_map(len(layers), int(original.model.config.num_hidden_layers),
                          config.hidden_map, stage)
    run_dir, teacher_key = _run_dir(config, ctx, model, original)
    run_dir.mkdir(parents=True, exist_ok=True)
    notes = ctx.record.notes
    notes |= {"teacher": ("the last distill stage's student" if config.teacher == "distilled"
                          else "the model as loaded" if getattr(ctx, "teacher", None)
                          else "the input model"),
              "layers": f"{depth} -> {len(layers)} {list(layers)}",
              "train_rows": len(rows), "labelled_rows": int(labelled_mask(rows).sum()),
              "checkpoints": str(run_dir)}
    started = time.perf_counter()
    if (run_dir / DONE).is_file() and (run_dir / FINAL).is_file():
        student_model.load_state_dict(torch.load(run_dir / FINAL, weights_only=True))
        notes |= json.loads((run_dir / DONE).read_text()) | {"reused": "a finished run of this stage"}
    else:
        from edgeopt.prepare.distill_train import LossSpec

        spec = LossSpec(kind, config.temperature, config.kl_weight, config.ce_weight,
                        config.hidden_weight, spec_map,
                        vocab_map(teacher.tokenizer, student.tokenizer, stage)
                        if kind == "lm" and use_teacher else None)
        summary = _train(config, rows, student, teacher if use_teacher else None, spec, run_dir,
                         teacher_key)
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save(student_model.state_dict(), run_dir / FINAL)
            (run_dir / DONE).write_text(json.dumps(summary))
            for old in run_dir.glob("checkpoint-*"):  # optimizer state: not needed once done
                shutil.rmtree(old, ignore_errors=True)
        notes |= summary
    student_model.to("cpu").float().eval()
    original.model.to("cpu").eval()
    out = LoadedModel(student_model, model.tokenizer)
    notes |= {"parameters": f"{model.parameter_count():,} -> {out.parameter_count():,}",
              "size_mb": f"{model.size_bytes / 1e6:.2f} -> {out.size_bytes / 1e6:.2f}",
              "stage_seconds_excluding_eval": round(time.perf_counter() - started, 1)}
    notes |= compare(kind, teacher, Side(student_model, model.tokenizer, kind, pooling, normalize),
                     ctx.request.inputs, config.max_length)
    if stage == "distill" and hasattr(ctx, "distilled"):
        ctx.distilled = out
    return out


def _teacher(config: DistillConfig, ctx: Any, model: LoadedModel) -> LoadedModel:
    """The model this stage learns from (see the module docstring)."""
    if config.teacher == "distilled":
        distilled = getattr(ctx, "distilled", None)
        if distilled is None:
            raise RecipeError(f"prepare {config.stage}: teacher: distilled needs a distill stage "
                              "before it in prepare:; add one or use teacher: loaded")
        return distilled
    return getattr(ctx, "teacher", None) or model


def _train(config: DistillConfig, rows: Any, student: Side, teacher: Side | None, spec: Any,
           run_dir: Path, teacher_key: str) -> dict[str, Any]:
    """Train ``student`` in place (resuming from ``run_dir``); the run's figures."""
    from edgeopt.prepare.distill_train import (
        BudgetCallback,
        elapsed_at,
        last_checkpoint,
        make_trainer,
        training_args,
    )

    labels = rows.labels if rows.labels is not None else np.full(len(rows), -1, dtype=np.int64)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps = config.max_steps or max(1, math.ceil(config.epochs * len(rows) / (config.batch_size * world)))
    # Cached teacher outputs: one teacher pass per row instead of one per step (a causal
    # LM's per-token logits and hidden states are too large to keep: they run live).
    cached = None
    if teacher is not None and config.cache_teacher and spec.kind != "lm" and not spec.hidden_weight:
        key = hashlib.sha256(json.dumps([teacher_key, rows.texts, config.max_length, teacher.pooling,
                                         teacher.normalize]).encode()).hexdigest()[:12]
        cached = _teacher_cache(teacher, rows.texts, config.max_length,
                                run_dir.parent / f"teacher-{key}.npy")
    collator = Collator(rows.texts, labels, student, teacher, config.max_length, cached)
    resume = last_checkpoint(run_dir)
    budget = BudgetCallback(config.stage, None if config.max_minutes is None else config.max_minutes * 60,
                            elapsed_at(resume), config.batch_size * world)
    args = training_args(run_dir, config, steps)
    trainer = make_trainer(student, None if cached is not None else teacher, spec,
                           RowDataset(len(rows)), collator, args, budget)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    # This run's training time, on the budget's clock (from the first step it trains, so a
    # resume's checkpoint loading is not counted in it nor in the total across runs).
    seconds = budget.spent() - budget.prior
    first = budget.first_step or 0
    done = trainer.state.global_step
    return {"steps": done, "max_steps": steps, "resumed_from_step": first,
            "stopped_by": "time budget" if budget.stopped_by_time else "steps",
            "train_seconds": round(seconds, 1), "train_seconds_total": round(budget.spent(), 1),
            "samples_per_s": round((done - first) * config.batch_size * world / max(seconds, 1e-9), 1),
            "final_loss": None if budget.loss is None else round(budget.loss, 4),
            "device": str(trainer.args.device),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "teacher_outputs": "cached" if cached is not None else "live" if teacher else "none"}


def _teacher_cache(teacher: Side, texts: tuple[str, ...], max_length: int, path: Path) -> np.ndarray:
    """The teacher's output per row, kept beside the runs (the runs of several seeds or
    configs on the same text share it)."""
    if path.is_file():
        cached = np.load(path)
        if len(cached) == len(texts):
            return cached
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.model.to(device)
    cached = outputs(teacher, texts, max_length, batch=256 if device == "cuda" else 64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, cached)
    tmp.replace(path)
    return cached


def _run_dir(config: DistillConfig, ctx: Any, model: LoadedModel, teacher: LoadedModel
             ) -> tuple[Path, str]:
    """``checkpoint_dir/<stage>-<key>`` (the key hashes what decides the run, so the same
    compile finds its checkpoints and a changed one starts afresh) and the teacher's hash."""
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ("checkpoint_dir", "logging_steps")}
    train = Path(ctx.request.train_data).resolve()
    stat = train.stat()
    model_sha = model.sha256()
    teacher_sha = model_sha if teacher is model else teacher.sha256()
    key = hashlib.sha256(json.dumps({
        "stage": config.stage, "config": fields, "task": ctx.request.src.task,
        "model": model_sha, "teacher": teacher_sha,
        "train": [str(train), stat.st_size, stat.st_mtime_ns],
    }, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = Path(config.checkpoint_dir) if config.checkpoint_dir else \
        ctx.request.out.parent / f"{ctx.request.out.name}.distill"
    return root / f"{config.stage}-{key}", teacher_sha
