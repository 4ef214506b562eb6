"""``edgeopt inspect``: where a bundle's nodes run on each provider, and where its bytes are.

:func:`inspect_bundle` measures each provider the way it can be measured here (a real
session, onnxruntime's checker, or "not checkable" with the reason) and returns an
:class:`Inspection`, which is also a report section (``placement``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.errors import BundleError, ModelError
from edgeopt.providers.base import Provider, SessionConfig
from edgeopt.providers.placement import Placement
from edgeopt.providers.registry import PROVIDERS, get_provider, parse_providers
from edgeopt.providers.sizes import WeightSizes, weight_sizes

# Providers inspected when neither the caller nor the bundle's manifest names any.
DEFAULT_PROVIDERS = ("qnn", "nnapi", "coreml", "cpu")
_TOP_SIZES = 12


@dataclass(frozen=True)
class Inspection:
    """Placement per provider and stored bytes per op type and layer, for one graph."""

    key: ClassVar[str] = "placement"
    title: ClassVar[str] = "Where the nodes run"

    model: str
    graph_nodes: int  # nodes in the file; each provider counts the graph it runs
    placements: tuple[Placement, ...]
    sizes: WeightSizes
    disabled_optimizers: tuple[str, ...] = field(default_factory=tuple)

    def placement(self, provider: str) -> Placement | None:
        return next((p for p in self.placements if p.provider == provider), None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "graph_nodes": self.graph_nodes,
                "disabled_optimizers": list(self.disabled_optimizers),
                "providers": [p.to_dict() for p in self.placements],
                "sizes": self.sizes.to_dict()}

    def to_markdown(self) -> str:
        lines = [f"`{self.model}`: {self.graph_nodes} nodes in the file; each provider counts "
                 "the graph onnxruntime gives it after its load-time optimizations.", "",
                 "| provider | measured by | nodes taken | partitions | verdict |",
                 "|---|---|---:|---:|---|"]
        for p in self.placements:
            taken = f"{p.taken} / {p.nodes}" if p.nodes else "-"
            parts = str(len(p.partitions)) if p.nodes else "-"
            lines.append(f"| {p.label} | {p.method} | {taken} | {parts} | {p.verdict} |")
        for p in self.placements:
            lines += _provider_md(p)
        lines += ["", f"Stored weights: {self.sizes.total_bytes / 1e6:.2f} MB.", "",
                  "| op type | MB |", "|---|---:|"]
        lines += [f"| {op} | {n / 1e6:.3f} |" for op, n in self.sizes.by_op_type[:_TOP_SIZES]]
        rest = sum(n for _, n in self.sizes.by_op_type[_TOP_SIZES:])
        if rest:
            lines.append(f"| (others) | {rest / 1e6:.3f} |")
        lines += ["", "| layer | MB |", "|---|---:|"]
        lines += [f"| {layer} | {n / 1e6:.3f} |" for layer, n in self.sizes.by_layer]
        return "\n".join(lines) + "\n"


def _provider_md(p: Placement) -> list[str]:
    lines = ["", f"### {p.label}", "", f"Measured by: {p.detail}."]
    if p.partitions and len(p.partitions) > 1:
        lines.append(f"Partition sizes: {', '.join(str(n) for n in p.partitions)} nodes.")
    if p.unsupported:
        lines += ["", "| op type left to the CPU | nodes | why |", "|---|---:|---|"]
        lines += [f"| {u.op_type} | {u.nodes} | {u.reason} |" for u in p.unsupported]
    lines += [f"- {note}" for note in p.notes]
    return lines


def inspect_bundle(model_path: str | Path, providers: str | Sequence[str | Provider] | None = None,
                   ) -> Inspection:
    """Inspect a bundle folder or an ``.onnx`` file on ``providers`` (names, a comma list,
    or Provider objects; default: the providers the bundle's manifest names, then the
    CPU, or :data:`DEFAULT_PROVIDERS` for a bare graph)."""
    import onnx

    model, manifest = _resolve(Path(model_path).expanduser())
    chosen = _choose(providers, manifest)
    disabled = tuple((manifest.get("session_options") or {}).get("disabled_optimizers") or ())
    config = SessionConfig(threads=1, disabled_optimizers=disabled)
    graph_nodes = len(onnx.load(str(model), load_external_data=False).graph.node)
    placements = tuple(p.place(model, config) for p in chosen)
    return Inspection(str(model), graph_nodes, placements, weight_sizes(model), disabled)


def _resolve(path: Path) -> tuple[Path, dict[str, Any]]:
    from edgeopt.bundle import MANIFEST, bundle_file, read_manifest

    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"{path} is not an .onnx file; pass a bundle folder or an .onnx file")
        return path, {}
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        rel = manifest.get("model")
        if not isinstance(rel, str):
            raise BundleError(f"{path}/{MANIFEST} names no model file; recompile the bundle")
        return bundle_file(path, rel), manifest
    raise ModelError(f"{path} is neither an .onnx file nor a bundle folder (with {MANIFEST}); "
                     "pass the -o folder of a compile or an .onnx file")


def _choose(providers: str | Sequence[str | Provider] | None, manifest: dict[str, Any]
            ) -> list[Provider]:
    if isinstance(providers, str):
        return parse_providers(providers)
    if providers:
        return [get_provider(p) if isinstance(p, str) else p for p in providers]
    named = [str(n) for n in manifest.get("providers") or ()]
    if not named:
        return [PROVIDERS[n] for n in DEFAULT_PROVIDERS]
    return parse_providers(",".join([*named, "cpu"]))
