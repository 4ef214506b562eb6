"""The training loop of distillation: the Hugging Face ``Trainer`` with the distillation
loss in ``compute_loss``, so one CPU, one GPU and ``accelerate launch``/``torchrun`` run
the same code (the Trainer places the student and wraps it for the processes; the
teacher is moved beside it and never trained). Checkpoints go to a persistent folder and
a rerun resumes from the newest complete one; a callback keeps the time budget and
prints loss and throughput."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported only when a distill stage runs (the stage registry imports its module on use).
from transformers import TrainerCallback

from edgeopt.prepare.distill_data import Side

ELAPSED_FILE = "distill-elapsed.json"


@dataclass(frozen=True)
class LossSpec:
    kind: str
    temperature: float
    kl_weight: float
    ce_weight: float
    hidden_weight: float
    hidden_map: tuple[int, ...]
    vocab_map: Any = None  # causal LMs after vocabulary trimming: teacher id per student id


def distill_loss(spec: LossSpec, student_out: Any, student_hidden: Any, teacher_out: Any,
                 teacher_hidden: Any, batch: dict[str, Any]) -> Any:
    """KL(teacher || student) at temperature T (x T^2, so its gradients keep their scale),
    plus cross-entropy on labelled rows, plus hidden-state MSE when asked."""
    import torch
    import torch.nn.functional as F

    s = student_out.float()
    loss = s.new_zeros(())
    labels = batch["labels"]
    mask = batch["student"]["attention_mask"].bool()
    T = spec.temperature
    if spec.kind == "lm":  # position i predicts token i+1, on real tokens only
        step = mask[:, 1:] & mask[:, :-1]
        s = s[:, :-1][step]
        targets = batch["student"]["input_ids"][:, 1:][step]
        if teacher_out is not None:
            t = teacher_out.float()[:, :-1][step]
            if spec.vocab_map is not None:
                t = t[:, spec.vocab_map.to(t.device)]
                s = s[:, : t.shape[1]]
        if spec.ce_weight:
            loss = loss + spec.ce_weight * F.cross_entropy(s, targets)
    else:
        t = None if teacher_out is None else teacher_out.float()
        labelled = labels >= 0
        if spec.kind == "classify" and spec.ce_weight and bool(labelled.any()):
            loss = loss + spec.ce_weight * F.cross_entropy(s[labelled], labels[labelled])
    if teacher_out is not None and spec.kl_weight:
        if spec.kind == "embed":
            term = (1 - F.cosine_similarity(s, t, dim=-1)).mean() + F.mse_loss(s, t)
        else:
            term = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                            reduction="batchmean") * T * T
        loss = loss + spec.kl_weight * term
    if spec.hidden_weight and teacher_hidden is not None:
        terms = [F.mse_loss(student_hidden[i + 1].float()[mask], teacher_hidden[j + 1].float()[mask])
                 for i, j in enumerate(spec.hidden_map)]
        loss = loss + spec.hidden_weight * torch.stack(terms).mean()
    return loss


def make_trainer(student: Side, teacher: Side | None, spec: LossSpec, dataset: Any, collator: Any,
                 args: Any, budget: BudgetCallback) -> Any:
    """A ``Trainer`` whose ``compute_loss`` is :func:`distill_loss`."""
    import torch
    from huggingface_hub.utils import disable_progress_bars
    from transformers import PrinterCallback, ProgressCallback, Trainer
    from transformers.utils import logging as hf_logging

    disable_progress_bars()  # checkpoint writes would draw bars over the stage display
    hf_logging.disable_progress_bar()

    class DistillTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            hidden = bool(spec.hidden_weight) and teacher is not None
            s_side = Side(model, student.tokenizer, student.kind, student.pooling, student.normalize)
            s_out, s_hidden = s_side.forward(inputs["student"], hidden)
            t_out, t_hidden = inputs.get("teacher_out"), None
            if t_out is None and "teacher" in inputs:
                with torch.no_grad(), self.compute_loss_context_manager():
                    t_out, t_hidden = teacher.forward(inputs["teacher"], hidden)
            loss = distill_loss(spec, s_out, s_hidden, t_out, t_hidden, inputs)
            return (loss, s_out) if return_outputs else loss

    trainer = DistillTrainer(model=student.model, args=args, train_dataset=dataset,
                             data_collator=collator, callbacks=[budget])
    for noisy in (PrinterCallback, ProgressCallback):  # the budget callback prints instead
        trainer.remove_callback(noisy)
    if teacher is not None:
        teacher.model.to(trainer.args.device).eval()
        for p in teacher.model.parameters():
            p.requires_grad_(False)
    return trainer


def training_args(run_dir: Path, config: Any, steps: int) -> Any:
    """TrainingArguments of one run: linear decay over ``steps``, checkpoints every
    ``save_steps`` (only the newest kept), mixed precision on a GPU."""
    import torch
    from transformers import TrainingArguments

    from edgeopt.errors import RecipeError

    cuda = torch.cuda.is_available()
    precision = config.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise RecipeError(f"prepare {config.stage}: precision fp16 needs a GPU; use fp32 or bf16")
    return TrainingArguments(
        output_dir=str(run_dir), max_steps=steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, weight_decay=0.01, lr_scheduler_type="linear",
        warmup_steps=config.warmup, logging_strategy="steps", logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=1,
        report_to="none", disable_tqdm=True, seed=config.seed, data_seed=config.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda,
        dataloader_num_workers=0, remove_unused_columns=False)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint written whole (a kill mid-save leaves one without its state)."""
    found = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def elapsed_at(checkpoint: Path | None) -> float:
    if checkpoint is None or not (checkpoint / ELAPSED_FILE).is_file():
        return 0.0
    return float(json.loads((checkpoint / ELAPSED_FILE).read_text())["seconds"])


class BudgetCallback(TrainerCallback):
    """Stops at the time budget (summed over resumed runs), keeps the loss, prints
    progress (step, loss, samples/s) and stores the time spent in each checkpoint."""

    def __init__(self, stage: str, max_seconds: float | None, prior_seconds: float,
                 samples_per_step: int, quiet: bool = False) -> None:
        self.stage, self.max_seconds, self.prior = stage, max_seconds, prior_seconds
        self.samples_per_step, self.quiet = samples_per_step, quiet
        self.start = time.perf_counter()
        self.last = (self.start, 0)
        self.first_step: int | None = None
        self.loss: float | None = None
        self.stopped_by_time = False

    def spent(self) -> float:
        return self.prior + time.perf_counter() - self.start

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.perf_counter()
        self.first_step = state.global_step
        self.last = (self.start, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.max_seconds is not None and self.spent() >= self.max_seconds:
            control.should_training_stop = True
            self.stopped_by_time = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.loss = float(logs["loss"])
        now = time.perf_counter()
        steps = state.global_step - self.last[1]
        rate = steps * self.samples_per_step / max(now - self.last[0], 1e-9)
        self.last = (now, state.global_step)
        if not self.quiet and state.is_world_process_zero:
            sys.stderr.write(f"  {self.stage}: step {state.global_step}/{state.max_steps}  "
                             f"loss {self.loss:.4f}  {rate:.1f} samples/s\n")
            sys.stderr.flush()

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            atomic_write(folder / ELAPSED_FILE, json.dumps({"seconds": self.spent()}))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
