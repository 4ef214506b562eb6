"""The text-in graph checked on every eval row: its ids against transformers', its
outputs against PyTorch, end to end from the strings.

A single row whose ids differ fails the compile (the app would see inputs the model was
never validated on); parity is judged on the text-in graph's own outputs with the same
gates as the token-in graph, so a bundle that takes text is judged as an app runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeopt.errors import ModelError
from edgeopt.evaldata import EvalData
from edgeopt.gates import Gates, ParityResult, check_gates
from edgeopt.metrics import output_metrics, per_row_metrics
from edgeopt.passes.tokenizer_graph import LABEL_OUTPUT, TokenizerPlan, custom_ops_library
from edgeopt.tasks import EncoderTask

BATCH = 32  # as the token-in validation batches its rows


@dataclass
class TextInputResult:
    """The report's section: what was put in the graph and how it was checked."""

    key: ClassVar[str] = "text_input"
    title: ClassVar[str] = "Text input (tokenizer in the graph)"

    model: str
    tokenizer: str  # wordpiece | byte-level-bpe | byte-level-bpe-split
    op: str
    library: str
    library_version: str
    max_length: int
    rows_checked: int
    rows_equal: int
    # Parity with PyTorch on the same rows: from token ids (model.onnx), from text.
    token_in: dict[str, float] = field(default_factory=dict)
    text_in: dict[str, float] = field(default_factory=dict)
    # Share of rows whose `label` output equals the arg-max of PyTorch's logits.
    label_output_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tokenizer": self.tokenizer, "op": self.op,
                "custom_ops": {"library": self.library, "version": self.library_version},
                "max_length": self.max_length,
                "ids": {"rows_checked": self.rows_checked, "rows_equal": self.rows_equal},
                "parity": {"token_in": self.token_in, "text_in": self.text_in},
                "label_output_agreement": self.label_output_agreement}

    def to_markdown(self) -> str:
        lines = [f"`{self.model}` takes strings: {self.tokenizer} tokenizer as the `{self.op}` op "
                 f"of {self.library} {self.library_version} (the app registers its library), "
                 f"truncation at {self.max_length} tokens.", "",
                 f"In-graph ids equal transformers' on {self.rows_equal} of {self.rows_checked} "
                 "eval rows.", "", "| metric | token ids in | text in |", "|---|---|---|"]
        for name in sorted(set(self.token_in) | set(self.text_in)):
            lines.append(f"| {name} | {_fmt(self.token_in.get(name))} | {_fmt(self.text_in.get(name))} |")
        if self.label_output_agreement is not None:
            lines += ["", f"`label` output = arg-max of PyTorch's logits on "
                          f"{self.label_output_agreement:.4f} of rows."]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def text_session(path: Path, threads: int = 2, disabled_optimizers: tuple[str, ...] = ()) -> Any:
    """An onnxruntime session of a text-in graph, the tokenizer ops' library registered."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(custom_ops_library())
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers) or None)


@dataclass
class IdCheck:
    """Rows compared so far, rows equal, and the first row that differs."""

    rows: int = 0
    equal: int = 0
    first: str | None = None  # the first differing row, described

    def compare(self, row: int, text: str, got: tuple[np.ndarray, np.ndarray],
                want: tuple[np.ndarray, np.ndarray], pad_left: bool) -> None:
        """Equal: the same ids on the real tokens, padded on the same side (a batch's
        width follows its longest row, so one differing row widens every row's)."""
        self.rows += 1
        ids, mask = got
        ref_ids, ref_mask = want
        a, b = ids[mask != 0].tolist(), ref_ids[ref_mask != 0].tolist()
        real = mask[len(mask) - len(a):] if pad_left else mask[: len(a)]
        if a == b and bool((real != 0).all()):
            self.equal += 1
            return
        if self.first is None:
            pos = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                       min(len(a), len(b)))
            shown = text if len(text) <= 60 else text[:57] + "..."
            self.first = (f"row {row + 1} {shown!r}: at token {pos} the graph has "
                          f"{a[pos:pos + 4]} (of {len(a)}), transformers {b[pos:pos + 4]} (of {len(b)})")


def check_text_model(path: Path, plan: TokenizerPlan, task: EncoderTask, data: EvalData,
                     reference: Any, gates: Gates, disabled_optimizers: tuple[str, ...] = ()
                     ) -> tuple[dict[str, Any], ParityResult]:
    """Run the text-in graph on every row of ``data``: fail on the first row whose ids
    differ from :meth:`EncoderTask.encode`'s, else judge its outputs against
    ``reference`` (PyTorch's, :func:`edgeopt.validate.reference_outputs`)."""
    session = text_session(path, disabled_optimizers=disabled_optimizers)
    texts = list(data.texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    values: list[np.ndarray | None] = [None] * len(texts)
    labels = np.full(len(texts), -1, dtype=np.int64)
    ids = IdCheck()
    names = [o.name for o in session.get_outputs()]
    for start in range(0, len(order), BATCH):
        idx = order[start : start + BATCH]
        chunk = [texts[i] for i in idx]
        out = dict(zip(names, session.run(None, {"text": np.array(chunk, dtype=object)}), strict=True))
        want = task.encode(chunk, max_length=plan.max_length)
        for j, row in enumerate(idx):
            ids.compare(int(row), texts[row], (out["input_ids"][j], out["attention_mask"][j]),
                        (want["input_ids"][j], want["attention_mask"][j]), plan.pad_left)
            values[row] = out[task.output_name][j]
            if LABEL_OUTPUT in out:
                labels[row] = out[LABEL_OUTPUT][j]
    if ids.equal != ids.rows:
        raise ModelError(f"text input: the in-graph tokenizer's ids differ from transformers' on "
                         f"{ids.rows - ids.equal} of {ids.rows} eval rows; first: {ids.first}; "
                         "compile without --text-input (the token-in bundle is unaffected)")
    cand = np.stack(values)
    metrics = output_metrics(reference.values, cand)
    metrics.update(task.task_metrics(reference.values, cand, data.labels))
    rows = per_row_metrics(reference.values, cand)
    if "label_agreement" not in metrics:
        del rows["agreement"]
    parity = ParityResult(len(data), data.source, metrics, check_gates(metrics, gates),
                          reference="original PyTorch fp32, judged from text (tokenizer in the graph)",
                          per_row={k: [None if not np.isfinite(v) else float(f"{v:.7g}")
                                       for v in a.tolist()] for k, a in rows.items()})
    checked = {"rows_checked": ids.rows, "rows_equal": ids.equal}
    if LABEL_OUTPUT in names:
        checked["label_output_agreement"] = float((labels == reference.values.argmax(-1)).mean())
    return checked, parity
