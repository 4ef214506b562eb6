"""The result of ``edgeopt diagnose``: per-tensor error between a reference and a
candidate model, where it enters, and a report a release manager can read.

Numbers only; running the models lives in :mod:`edgeopt.intermediates`. Statistics are
accumulated batch by batch (:class:`ErrorStats`) so memory stays flat in the number
of rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from edgeopt.metrics import row_cosine

# fp32 rounding and fusion reorderings stay above ~100 dB SQNR; int8 sits at 20-45 dB.
# Above this a drop is float noise, never "the place the error jumps".
FLOAT_NOISE_DB = 80.0

_LAYER = re.compile(r"(?:^|[/._])(?:layers?|blocks?|h)[._](\d+)(?=[/._]|$)")


def layer_of(name: str) -> int | None:
    """The layer index in a tensor, node or module name ('layer.3', 'layers.3', 'layer_3')."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def _db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), as :func:`edgeopt.metrics.sqnr_db` but from running sums."""
    if noise == 0.0:
        return math.inf
    if not math.isfinite(noise):
        return -math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


class ErrorStats:
    """Running sums for one tensor pair: signal and noise power, max error, row cosines."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.cos_sum = 0.0
        self.rows = 0
        self.shape_mismatch: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if ref.shape != cand.shape:
            self.shape_mismatch = (tuple(ref.shape), tuple(cand.shape))
            return
        if ref.size == 0:
            return
        # One row per leading index (a batch row for activations), for the row cosine.
        r = np.asarray(ref, dtype=np.float64).reshape(ref.shape[0] if ref.ndim else 1, -1)
        c = np.asarray(cand, dtype=np.float64).reshape(r.shape)
        with np.errstate(invalid="ignore"):  # inf - inf, handled just below
            diff = r - c
        if not np.isfinite(diff).all():
            # Equal infinities (masks filled with -inf) are no error; anything else is.
            diff = np.where(r == c, 0.0, diff)
            r = np.where(np.isfinite(r), r, 0.0)
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(diff * diff)) if np.isfinite(diff).all() else math.inf
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.cos_sum += float(np.sum(row_cosine(r, np.where(np.isfinite(c), c, 0.0))))
        self.rows += r.shape[0]

    @property
    def sqnr_db(self) -> float:
        return _db(self.signal, self.noise)

    @property
    def cosine(self) -> float:
        return self.cos_sum / self.rows if self.rows else math.nan


@dataclass(frozen=True)
class TensorDiff:
    """One compared tensor, in the reference graph's topological order.

    ``drop_db`` is the SQNR lost at this node: its compared inputs' worst SQNR minus its
    own (exact inputs count as +inf). ``own_sqnr_db`` is measured with the candidate's
    node fed the reference's inputs: the error the node adds by itself, which ranks
    nodes fairly (a drop from +inf is infinite however small the error).
    """

    order: int
    tensor: str
    node: str
    op: str
    cand_op: str
    layer: int | None
    sqnr_db: float
    cosine: float
    max_abs_error: float
    input_sqnr_db: float
    drop_db: float
    own_sqnr_db: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LayerSummary:
    """Error in one layer (``layer`` None: nodes outside the numbered layers)."""

    layer: int | None
    tensors: int
    output_sqnr_db: float  # the layer's last compared tensor
    min_sqnr_db: float
    worst: str  # tensor whose node adds the most error
    worst_node: str
    worst_own_sqnr_db: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Diagnosis:
    """Where a candidate model departs from its reference, tensor by tensor (a report
    section when a compile's gate fails)."""

    key: ClassVar[str] = "diagnosis"
    title: ClassVar[str] = "Where the error comes from"

    reference: str
    candidate: str
    rows: int
    source: str
    jump_db: float
    tensors: tuple[TensorDiff, ...]
    layers: tuple[LayerSummary, ...]
    first_jump: TensorDiff | None
    outputs: tuple[TensorDiff, ...]  # the compared graph outputs
    coverage: str = ""  # what could be matched, when not every tensor can be
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    def ranked(self) -> list[TensorDiff]:
        """Tensors whose node adds the most error first (lowest own SQNR)."""
        return sorted(self.tensors, key=lambda t: (_key(t.own_sqnr_db), t.order))

    def headline(self) -> str:
        """One line: where the error first jumps, or that it never does."""
        if not self.tensors:
            return "no tensors could be compared"
        lowest = min(t.sqnr_db for t in self.tensors)
        j = self.first_jump
        if j is None:
            if lowest >= FLOAT_NOISE_DB:
                return f"no node adds meaningful error: every tensor is within float rounding " \
                       f"(lowest SQNR {_f(lowest)} dB)"
            return f"no single node drops SQNR by {self.jump_db:g} dB or more; the error " \
                   f"builds up gradually (lowest SQNR {_f(lowest)} dB)"
        where = f"layer {j.layer}" if j.layer is not None else "outside the numbered layers"
        return (f"error first jumps at `{j.node}` ({where}, {_ops(j)}): SQNR {_f(j.input_sqnr_db)}"
                f" -> {_f(j.sqnr_db)} dB, its own error at {_f(j.own_sqnr_db)} dB")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; +-inf becomes None (an infinite SQNR means identical tensors)."""
        return {
            "reference": self.reference, "candidate": self.candidate, "rows": self.rows,
            "source": self.source, "jump_db": self.jump_db, "headline": self.headline(),
            "first_jump": self.first_jump.to_dict() if self.first_jump else None,
            "outputs": [t.to_dict() for t in self.outputs],
            "layers": [s.to_dict() for s in self.layers],
            "tensors": [t.to_dict() for t in self.tensors],
            "coverage": self.coverage, "notes": list(self.notes), "seconds": self.seconds,
        }

    def to_markdown(self, top: int = 15) -> str:
        lines = [f"`{self.reference}` (reference) vs `{self.candidate}` (candidate), "
                 f"{self.rows} rows of {self.source}; {len(self.tensors)} tensors compared"
                 + (f" ({self.coverage})" if self.coverage else "") + ".", ""]
        lines += [f"**{self.headline()[0].upper()}{self.headline()[1:]}.**", ""]
        worst = self.ranked()[0] if self.tensors else None
        if worst is not None and math.isfinite(worst.own_sqnr_db):
            where = f"layer {worst.layer}, " if worst.layer is not None else ""
            lines.append(f"- node adding the most error by itself: {_where(worst.node, worst.tensor)}"
                         f" ({where}{_ops(worst)}), own SQNR {_f(worst.own_sqnr_db)} dB")
        for out in self.outputs:
            lines.append(f"- output `{out.tensor}`: SQNR {_f(out.sqnr_db)} dB, cosine "
                         f"{out.cosine:.4f}, max abs error {out.max_abs_error:.4g}")
        lines += ["", "| layer | tensors | SQNR at layer output dB | lowest SQNR dB | "
                  "node adding most error | its own SQNR dB |", "|---|---:|---:|---:|---|---:|"]
        for s in self.layers:
            name = str(s.layer) if s.layer is not None else "other"
            lines.append(f"| {name} | {s.tensors} | {_f(s.output_sqnr_db)} | {_f(s.min_sqnr_db)} "
                         f"| {_where(s.worst_node, s.worst)} | {_f(s.worst_own_sqnr_db)} |")
        lines += ["", f"Nodes adding the most error, top {min(top, len(self.tensors))} of "
                  f"{len(self.tensors)}. *SQNR*: error that reaches the tensor; *drop*: SQNR "
                  "lost at the node; *own*: SQNR of the node's output when it is fed the "
                  "reference's inputs, the error it adds by itself (lower is worse).", "",
                  "| # | node | op (ref / cand) | layer | SQNR dB | cosine | drop dB | own dB |",
                  "|---:|---|---|---:|---:|---:|---:|---:|"]
        for t in self.ranked()[:top]:
            layer = "" if t.layer is None else str(t.layer)
            lines.append(f"| {t.order} | {_where(t.node, t.tensor)} | {_ops(t)} | {layer} "
                         f"| {_f(t.sqnr_db)} | {t.cosine:.5f} | {_f(t.drop_db, 'inf')} "
                         f"| {_f(t.own_sqnr_db)} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Compared:
    """A tensor to compare and where it sits: the builder's input."""

    tensor: str
    node: str
    op: str
    cand_op: str
    layer: int | None
    order: int
    inputs: tuple[str, ...]  # nearest compared tensors upstream
    is_output: bool = False


def build_diagnosis(
    compared: list[Compared], stats: dict[str, ErrorStats], own: dict[str, ErrorStats], *,
    reference: str, candidate: str,
    rows: int, source: str, jump_db: float, coverage: str = "", notes: list[str] | None = None,
    seconds: float = 0.0,
) -> Diagnosis:
    """Per-tensor rows, per-layer summaries and the first jump from the accumulated errors
    (``stats``: candidate run as is; ``own``: each node fed the reference's inputs)."""
    notes = list(notes or [])
    sqnr = {c.tensor: stats[c.tensor].sqnr_db for c in compared
            if stats[c.tensor].shape_mismatch is None and stats[c.tensor].rows}
    diffs = []
    for c in sorted(compared, key=lambda c: c.order):
        st = stats[c.tensor]
        if st.shape_mismatch is not None:
            notes.append(f"`{c.tensor}` skipped: shapes differ {st.shape_mismatch[0]} vs "
                         f"{st.shape_mismatch[1]}")
            continue
        if c.tensor not in sqnr:
            continue
        s_in = min((sqnr[i] for i in c.inputs if i in sqnr), default=math.inf)
        s_out = sqnr[c.tensor]
        drop = 0.0 if s_in == s_out else s_in - s_out
        s_own = own[c.tensor].sqnr_db if own[c.tensor].rows else math.nan
        diffs.append(TensorDiff(c.order, c.tensor, c.node, c.op, c.cand_op, c.layer, s_out,
                                st.cosine, st.max_abs, s_in, drop, s_own))
    return Diagnosis(
        reference=reference, candidate=candidate, rows=rows, source=source, jump_db=jump_db,
        tensors=tuple(diffs), layers=tuple(_layers(diffs)), first_jump=_first_jump(diffs, jump_db),
        outputs=tuple(d for d in diffs if d.tensor in {c.tensor for c in compared if c.is_output}),
        coverage=coverage, notes=tuple(notes), seconds=seconds,
    )


def _key(db: float) -> float:
    """Sort key: an unmeasured SQNR (nan) ranks as harmless."""
    return math.inf if math.isnan(db) else db


def _first_jump(diffs: list[TensorDiff], jump_db: float) -> TensorDiff | None:
    """Earliest node that loses >= jump_db and whose own error is within jump_db of the
    worst node's: the entry point of the error that matters, not of every rounding."""
    worst = min((_key(d.own_sqnr_db) for d in diffs), default=math.inf)
    for d in diffs:
        if (d.drop_db >= jump_db and d.sqnr_db < FLOAT_NOISE_DB
                and d.own_sqnr_db <= worst + jump_db):
            return d
    return None


def _layers(diffs: list[TensorDiff]) -> list[LayerSummary]:
    groups: dict[int | None, list[TensorDiff]] = {}
    for d in diffs:
        groups.setdefault(d.layer, []).append(d)
    keys = sorted(k for k in groups if k is not None) + ([None] if None in groups else [])
    out = []
    for k in keys:
        g = groups[k]
        worst = min(g, key=lambda d: (_key(d.own_sqnr_db), d.order))
        out.append(LayerSummary(k, len(g), g[-1].sqnr_db, min(d.sqnr_db for d in g), worst.tensor,
                                worst.node, worst.own_sqnr_db))
    return out


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _f(v: float, inf: str = "exact") -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return inf if v > 0 else "-inf"
    return f"{v:.1f}"


def _ops(t: TensorDiff) -> str:
    return t.op if t.op == t.cand_op else f"{t.op} / {t.cand_op}"


def _where(node: str, tensor: str) -> str:
    """The node, and its tensor when the node name says nothing about the place (fused
    nodes are called 'Attention_1'; their output keeps the exporter's scoped name)."""
    if "/" in node or "." in node:
        return f"`{node}`"
    return f"`{node}` (`{_short(tensor)}`)"


def _short(tensor: str) -> str:
    """Tensor names from the TorchScript exporter, minus the boilerplate."""
    return re.sub(r"_output_0$", "", tensor.removeprefix("/model/"))
