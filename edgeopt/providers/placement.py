"""Where a graph's nodes run on one provider: how many it takes, in how many partitions,
which op types it leaves to the CPU and why, and a verdict a release manager can read.

Every figure comes from onnxruntime (a real session's node assignment, or its static
checker); nothing here estimates. A provider that cannot be checked here says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

# How a placement was measured.
Method = Literal["session", "checker", "not checkable"]
Grade = Literal["ok", "fallbacks", "not recommended", "fails", "not checkable"]
# Why a node stays on the CPU: no kernel for its op type; a dynamic input shape; an input
# rank the provider cannot take; onnxruntime assigned it elsewhere (a session says no more).
Cause = Literal["op", "shape", "rank", "assigned"]

# Each partition boundary copies tensors between the CPU and the accelerator, twice per
# run: a few partitions covering most nodes are worth trying, more are usually slower
# than the CPU alone (onnxruntime's own usability checker reasons the same way).
_MAX_FALLBACK_PARTITIONS = 3
_MIN_FALLBACK_SHARE = 0.75


@dataclass(frozen=True)
class Unsupported:
    """Nodes of one op type the provider leaves to the CPU, and why."""

    op_type: str  # "LayerNormalization", or "com.microsoft:BiasGelu" outside the ONNX domain
    nodes: int
    reason: str
    cause: Cause = "op"


@dataclass(frozen=True)
class Placement:
    """Node placement of one graph on one provider."""

    provider: str  # edgeopt name ("qnn")
    ep: str  # onnxruntime name
    label: str
    method: Method
    detail: str  # how it was measured, or why it could not be
    accelerator: bool = True
    nodes: int = 0  # nodes in the graph as measured (onnxruntime optimizes at load)
    taken: int = 0  # nodes the provider runs
    partitions: tuple[int, ...] = ()  # node count of each partition on the provider
    unsupported: tuple[Unsupported, ...] = ()
    # Nodes left to the CPU on purpose (QNN: quantizing graph inputs and outputs).
    by_design: int = 0
    error: str | None = None  # the session failed to load
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def share(self) -> float:
        """Fraction of the nodes that should run on the provider that do."""
        wanted = self.nodes - self.by_design
        return self.taken / wanted if wanted > 0 else 0.0

    @property
    def grade(self) -> Grade:
        if self.method == "not checkable":
            return "not checkable"
        if self.error is not None:
            return "fails"
        if self.taken >= self.nodes - self.by_design and len(self.partitions) <= 1:
            return "ok"
        if not self.accelerator:
            return "fails"
        if (self.taken and len(self.partitions) <= _MAX_FALLBACK_PARTITIONS
                and self.share >= _MIN_FALLBACK_SHARE):
            return "fallbacks"
        return "not recommended"

    @property
    def verdict(self) -> str:
        """One line: can this graph ship on this provider, and what to expect."""
        grade, label = self.grade, self.label
        ops = self._left_out()
        if grade == "not checkable":
            return f"not checkable here: {self.detail}"
        if grade == "fails":
            if self.error is not None:
                return f"does not load on {label}: {self.error}"
            return f"{label} cannot run {self.nodes - self.taken} of {self.nodes} nodes ({ops})"
        if grade == "ok":
            if not self.accelerator:
                return f"runs on the {label} ({self.nodes} nodes)"
            extra = (f" ({self.by_design} graph input/output quantization nodes stay on the CPU "
                     "by design)" if self.by_design else "")
            return f"runs as one graph on {label}{extra}"
        parts = len(self.partitions)
        where = f"{parts} partition{'s' if parts != 1 else ''}, {self.share:.0%} of nodes"
        if grade == "fallbacks":
            return f"{where}: expect CPU fallbacks ({ops})"
        if not self.taken:
            return f"not recommended: {label} takes none of the {self.nodes} nodes ({ops})"
        if self.share < _MIN_FALLBACK_SHARE:
            return (f"not recommended: only {where} run on {label}; the CPU does most of the "
                    f"work (left out: {ops})")
        return (f"not recommended: {where} on {label}; every boundary copies tensors to and "
                f"from the CPU, likely slower than the CPU alone (left out: {ops})")

    def _left_out(self) -> str:
        """What keeps nodes off the provider, shortest first: op types it has no kernel for,
        then how many nodes other causes keep off."""
        ops = sorted({u.op_type for u in self.unsupported if u.cause in ("op", "assigned")})
        text = ", ".join(ops[:6]) + (f" and {len(ops) - 6} more op types" if len(ops) > 6 else "")
        for cause, words in (("shape", "with a dynamic input shape"), ("rank", "of rank above 5")):
            count = sum(u.nodes for u in self.unsupported if u.cause == cause)
            if count:
                text += f"{'; ' if text else ''}{count} nodes {words}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "ep": self.ep, "label": self.label, "method": self.method,
            "detail": self.detail, "grade": self.grade, "verdict": self.verdict,
            "nodes": self.nodes, "taken": self.taken, "share": round(self.share, 4),
            "partitions": list(self.partitions), "by_design": self.by_design,
            "unsupported": [{"op_type": u.op_type, "nodes": u.nodes, "reason": u.reason,
                             "cause": u.cause} for u in self.unsupported],
            "error": self.error, "notes": list(self.notes),
        }


def op_key(domain: str, op_type: str) -> str:
    """``op_type`` for ONNX ops, ``domain:op_type`` otherwise."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}:{op_type}"


def group_unsupported(nodes: Iterable[tuple[str, str, Cause]]) -> tuple[Unsupported, ...]:
    """(op type, reason, cause) per left-out node -> one entry per op type and reason, most
    nodes first."""
    counts = Counter(nodes)
    return tuple(Unsupported(op, n, reason, cause) for (op, reason, cause), n
                 in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def connected_groups(graph: Any, members: set[str]) -> list[list[str]]:
    """The nodes named in ``members`` split into groups joined by a tensor one produces and
    another reads (``graph``: an onnx.GraphProto). A simpler rule than onnxruntime's
    partitioner, which may also split a group to avoid a cycle through the CPU; used only
    where the provider does not report its partitions itself."""
    parent = {name: name for name in members}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    producer = {o: n.name for n in graph.node if n.name in members for o in n.output if o}
    for node in graph.node:
        if node.name not in members:
            continue
        for tensor in node.input:
            src = producer.get(tensor)
            if src is not None:
                parent[root(src)] = root(node.name)
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.name in members:
            groups.setdefault(root(node.name), []).append(node.name)
    return sorted(groups.values(), key=len, reverse=True)


def not_checkable(provider: Any, why: str) -> Placement:
    """A placement that says plainly it could not be measured here."""
    return Placement(provider.name, provider.ep, provider.label, "not checkable", why,
                     accelerator=provider.accelerator)


def failed(provider: Any, detail: str, err: BaseException) -> Placement:
    """A session placement whose session did not load: the first line of the error."""
    lines = str(err).strip().splitlines()
    return Placement(provider.name, provider.ep, provider.label, "session", detail,
                     accelerator=provider.accelerator,
                     error=lines[0][:400] if lines else type(err).__name__)
