"""What distillation feeds and measures: batches tokenized per model (the teacher keeps its
own tokenizer, so after vocabulary trimming it still reads the original ids), the
teacher's outputs computed once per row, and the teacher/student figures for the record.

Three kinds of model, one output each: a classifier's logits, an embedder's pooled
sentence vector (the folder's pooling), a causal LM's next-token logits."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.errors import RecipeError
from edgeopt.families import FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TEXT_GENERATION

KINDS = {TEXT_CLASSIFICATION: "classify", FEATURE_EXTRACTION: "embed", TEXT_GENERATION: "lm"}
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def kind_of(task: str, stage: str) -> str:
    if task not in KINDS:
        raise RecipeError(f"prepare {stage} takes {', '.join(KINDS)} models, not {task}")
    return KINDS[task]


@dataclass(frozen=True)
class Side:
    """One model of the pair as distillation drives it."""

    model: Any
    tokenizer: Any
    kind: str
    pooling: str = "mean"
    normalize: bool = False

    def input_names(self) -> tuple[str, ...]:
        params = inspect.signature(self.model.forward).parameters
        return tuple(n for n in _INPUT_NAMES if n in params)

    def encode(self, texts: list[str], max_length: int) -> dict[str, Any]:
        tok = self.tokenizer
        if tok.pad_token_id is None:  # causal LMs often have none: pad with end-of-text
            tok.pad_token = tok.eos_token
        enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {n: enc[n] for n in self.input_names() if n in enc}

    def forward(self, feeds: dict[str, Any], hidden: bool = False) -> tuple[Any, Any]:
        """(output, hidden states or None) for tokenized ``feeds``."""
        from edgeopt.tasks import _pool

        out = self.model(**feeds, output_hidden_states=hidden)
        states = out.hidden_states if hidden else None
        if self.kind == "embed":
            return _pool(out.last_hidden_state, feeds["attention_mask"], self.pooling,
                         self.normalize), states
        return out.logits, states


def same_tokenizer(a: Any, b: Any) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


def vocab_map(teacher_tok: Any, student_tok: Any, stage: str) -> Any:
    """Teacher id of each student id (None when the vocabularies are the same): a causal
    LM's KL compares the two distributions over the student's tokens."""
    import torch

    if same_tokenizer(teacher_tok, student_tok):
        return None
    teacher_vocab = teacher_tok.get_vocab()
    pieces = sorted(student_tok.get_vocab().items(), key=lambda kv: kv[1])
    missing = [p for p, _ in pieces if p not in teacher_vocab]
    if missing:
        raise RecipeError(f"prepare {stage}: the student's tokenizer has {len(missing)} piece(s) the "
                          f"teacher's lacks (e.g. {missing[0]!r}); logits cannot be compared")
    return torch.tensor([teacher_vocab[p] for p, _ in pieces], dtype=torch.long)


class RowDataset:
    """Row indices: the collator looks up text, label and cached teacher output."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class Collator:
    """Tokenizes a batch of rows for the student and, when its tokenizer differs and the
    teacher runs live, for the teacher too; adds labels (-1: none) and cached outputs."""

    texts: tuple[str, ...]
    labels: np.ndarray
    student: Side
    teacher: Side | None
    max_length: int
    cached: np.ndarray | None = None

    def __call__(self, rows: list[int]) -> dict[str, Any]:
        import torch

        texts = [self.texts[i] for i in rows]
        batch: dict[str, Any] = {"student": self.student.encode(texts, self.max_length),
                                 "labels": torch.as_tensor(self.labels[rows], dtype=torch.long)}
        if self.cached is not None:
            batch["teacher_out"] = torch.from_numpy(self.cached[rows])
        elif self.teacher is not None:
            if same_tokenizer(self.teacher.tokenizer, self.student.tokenizer):
                batch["teacher"] = batch["student"]
            else:
                batch["teacher"] = self.teacher.encode(texts, self.max_length)
        return batch


def outputs(side: Side, texts: tuple[str, ...], max_length: int, batch: int = 64) -> np.ndarray:
    """``side``'s output for every text, in order (float32; rows sorted by length inside so
    little time goes to padding)."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    result: np.ndarray | None = None
    was_training = side.model.training
    side.model.eval()
    device = next(side.model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            feeds = {k: v.to(device) for k, v in side.encode([texts[i] for i in rows], max_length).items()}
            out = side.forward(feeds)[0].float().cpu().numpy()
            if result is None:
                result = np.zeros((len(texts), *out.shape[1:]), dtype=np.float32)
            result[rows] = out
    side.model.train(was_training)
    return result if result is not None else np.zeros((0,), dtype=np.float32)


def compare(kind: str, teacher: Side, student: Side, eval_inputs: Any,
            max_length: int) -> dict[str, Any]:
    """Teacher and student on the compile's eval data: accuracy and label agreement
    (classifiers), cosine (embedders), perplexity (causal LMs)."""
    if kind == "lm":
        text = getattr(eval_inputs, "text", "")
        return {"perplexity_teacher": round(perplexity(teacher, text, max_length), 4),
                "perplexity_student": round(perplexity(student, text, max_length), 4)}
    data = eval_inputs.data
    t = outputs(teacher, data.texts, max_length)
    s = outputs(student, data.texts, max_length)
    out: dict[str, Any] = {"eval_rows": len(data)}
    if kind == "classify":
        out["label_agreement"] = round(float((t.argmax(-1) == s.argmax(-1)).mean()), 4)
        if data.labels is not None:
            out["accuracy_teacher"] = round(float((t.argmax(-1) == data.labels).mean()), 4)
            out["accuracy_student"] = round(float((s.argmax(-1) == data.labels).mean()), 4)
    else:
        cos = (t * s).sum(-1) / np.maximum(np.linalg.norm(t, axis=-1) * np.linalg.norm(s, axis=-1), 1e-12)
        out["cosine_mean"], out["cosine_min"] = round(float(cos.mean()), 4), round(float(cos.min()), 4)
    return out


def perplexity(side: Side, text: str, window: int, max_windows: int = 16) -> float:
    """Perplexity over up to ``max_windows`` non-overlapping windows of ``text``, in the
    model's own tokens."""
    import torch

    ids = side.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    chunks = [ids[i:i + window] for i in range(0, len(ids) - 1, window)][:max_windows]
    chunks = [c for c in chunks if len(c) >= 2]
    if not chunks:
        return float("nan")
    device = next(side.model.parameters()).device
    total, count = 0.0, 0
    was_training = side.model.training
    side.model.eval()
    with torch.inference_mode():
        for chunk in chunks:
            chunk = chunk.unsqueeze(0).to(device)
            logits = side.model(input_ids=chunk).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
            total, count = total + float(nll), count + chunk.shape[1] - 1
    side.model.train(was_training)
    return float(np.exp(total / count))
