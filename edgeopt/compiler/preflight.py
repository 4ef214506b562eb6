"""Compile-time preflight: does the target's own accelerator take the compiled graph?

A target that names an accelerator (``providers: [QNNExecutionProvider, ...]``) promises
the bundle runs there. This stage measures the placement of the final graph on the first
accelerator the recipe names, the way that provider can be measured here (a real session
for QNN, onnxruntime's usability checker for NNAPI and CoreML), and puts it in the report.
With ``preflight.require_one_graph`` a graph the accelerator cannot run whole (a node
left to the CPU, more than one partition, a load error) fails the compile in one line
naming the ops and why. A provider that cannot be checked here (QNN without its extra,
XNNPACK) is recorded as "not checked" and never fails the compile: nothing was measured.
CPU-only targets skip the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.artifact import OnnxArtifact
from edgeopt.compiler.stage import StageContext
from edgeopt.errors import PreflightError
from edgeopt.providers import Provider, SessionConfig, get_provider
from edgeopt.providers.placement import Placement
from edgeopt.recipe import PreflightConfig, Recipe

_MAX_OPS = 4  # op types named in the one-line error; the report lists them all


def accelerator(recipe: Recipe) -> Provider | None:
    """The first accelerator among the recipe's providers (None: CPU only)."""
    return next((p for p in map(get_provider, recipe.providers) if p.accelerator), None)


def wanted(ctx: StageContext) -> bool:
    """Whether the stage runs: only for targets that name an accelerator."""
    return accelerator(ctx.request.recipe) is not None


def one_graph(placement: Placement) -> bool:
    """Every node on the provider, in one partition, and the graph loads. Stricter than
    :attr:`Placement.grade`: a node left to the CPU by design still needs CPU fallback."""
    return (placement.error is None and placement.nodes > 0
            and placement.taken == placement.nodes and len(placement.partitions) == 1)


@dataclass(frozen=True)
class Preflight:
    """The target's accelerator placement of the bundle graph (a report section)."""

    key: ClassVar[str] = "preflight"
    title: ClassVar[str] = "Accelerator preflight"

    provider: str  # edgeopt's provider name
    required: bool  # preflight.require_one_graph
    placement: Placement

    @property
    def status(self) -> str:
        """"one graph", "not one graph" or "not checked: <why>"."""
        if self.placement.method == "not checkable":
            return f"not checked: {self.placement.detail}"
        return "one graph" if one_graph(self.placement) else "not one graph"

    @property
    def failed(self) -> bool:
        return self.required and self.status == "not one graph"

    def reason(self) -> str:
        """One line: what keeps the graph from running whole on the provider."""
        p = self.placement
        if p.error is not None:
            return f"{p.label} does not load the graph: {p.error}"
        left = "; ".join(f"{u.op_type} x{u.nodes}: {u.reason}" for u in p.unsupported[:_MAX_OPS])
        more = len(p.unsupported) - _MAX_OPS
        left += f"; and {more} more op types" if more > 0 else ""
        parts = len(p.partitions)
        return (f"{p.label} takes {p.taken} of {p.nodes} nodes in {parts} "
                f"partition{'s' if parts != 1 else ''}" + (f" (left to the CPU: {left})" if left else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "required": self.required, "status": self.status,
                "failed": self.failed, "placement": self.placement.to_dict()}

    def to_markdown(self) -> str:
        p = self.placement
        gate = "required" if self.required else "recorded only (preflight.require_one_graph: false)"
        lines = [f"{p.label}, measured by {p.method} ({p.detail}); one graph {gate}.", "",
                 f"**{self.status}**: {p.verdict}."]
        if self.status == "not one graph":
            lines += ["", self.reason() + "."]
        if p.unsupported:
            lines += ["", "| op type left to the CPU | nodes | why |", "|---|---:|---|"]
            lines += [f"| {u.op_type} | {u.nodes} | {u.reason} |" for u in p.unsupported]
        lines += [f"- {note}" for note in p.notes]
        return "\n".join(lines)


def preflight(graph: OnnxArtifact, config: PreflightConfig, _workdir: Path, ctx: StageContext
              ) -> OnnxArtifact:
    """Place ``graph`` on the target's accelerator, report it, and fail the compile when
    the recipe requires one graph and the provider cannot run it as one."""
    recipe = ctx.request.recipe
    provider = accelerator(recipe)
    if provider is None:  # the family's ``when`` skips CPU-only targets; keep it safe
        return graph
    session = SessionConfig(threads=1, disabled_optimizers=recipe.disabled_optimizers())
    result = Preflight(provider.name, config.require_one_graph, provider.place(graph.path, session))
    ctx.sections.append(result)
    ctx.record.config = {"provider": provider.name, "require_one_graph": config.require_one_graph}
    p = result.placement
    ctx.record.notes |= {"status": result.status, "taken": f"{p.taken}/{p.nodes}",
                         "partitions": len(p.partitions)}
    if result.failed:
        raise PreflightError(f"{ctx.request.target} preflight failed: {result.reason()}; the "
                             f"target requires the whole graph on {p.label} "
                             "(preflight.require_one_graph)")
    return graph
