"""Sessions on a named provider that either run on it or fail with one clear line.

onnxruntime never refuses a provider it cannot give: a missing one is skipped with a
warning and the CPU runs everything. :func:`open_session` checks what the session really
got and raises :class:`~edgeopt.errors.ProviderError` otherwise.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt.errors import ProviderError
from edgeopt.providers.base import Provider, SessionConfig
from edgeopt.providers.placement import (
    Placement,
    connected_groups,
    failed,
    group_unsupported,
    not_checkable,
    op_key,
)

CPU_EP = "CPUExecutionProvider"
_NO_FALLBACK = "fallback to CPU EP has been explicitly disabled"


def session_options(config: SessionConfig) -> Any:
    """SessionOptions every provider starts from: fixed threads, no spinning, quiet logs,
    and the node assignment recorded (placement reads it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if not config.allow_fallback:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return options


def builtin_opener(ep: str) -> Callable[[Any, SessionConfig], Any]:
    """Opens sessions on an execution provider compiled into the onnxruntime package, with
    the CPU behind it for what it does not take."""

    def open_on(model: Any, config: SessionConfig) -> Any:
        import onnxruntime as ort

        providers = [ep] if ep == CPU_EP else [ep, CPU_EP]
        return ort.InferenceSession(model, sess_options=session_options(config), providers=providers,
                                    disabled_optimizers=list(config.disabled_optimizers) or None)

    return open_on


def open_session(model: Any, provider: str | Provider, threads: int = 2,
                 allow_fallback: bool = True, disabled_optimizers: tuple[str, ...] = ()) -> Any:
    """An InferenceSession that really runs on ``provider`` (a name or a Provider).

    Raises ProviderError when the provider is unknown or not installed here, when
    onnxruntime silently gave another one, when an accelerator took none of the nodes,
    and, with ``allow_fallback=False``, when any node would run on the CPU.
    """
    from edgeopt.providers.registry import get_provider

    p = get_provider(provider) if isinstance(provider, str) else provider
    available = p.availability()
    if available.kind != "session" or p.open is None:
        raise ProviderError(f"cannot open a session on {p.label} ({p.ep}) here: {available.detail}")
    try:
        session = p.open(model if isinstance(model, bytes) else str(model),
                         SessionConfig(threads=threads, allow_fallback=allow_fallback,
                                       disabled_optimizers=tuple(disabled_optimizers)))
    except Exception as err:
        if _NO_FALLBACK in str(err):
            raise ProviderError(f"{p.label} does not take the whole graph and CPU fallback is "
                                f"off; run `edgeopt inspect MODEL --ep {p.name}` to see which "
                                "nodes it leaves out") from None
        raise
    check_session(session, p)
    return session


def check_got(session: Any, provider: Provider) -> None:
    """Raise ProviderError unless ``session`` runs ``provider`` at all."""
    got = list(session.get_providers())
    if provider.ep not in got:
        raise ProviderError(f"asked for {provider.ep} but onnxruntime gave {', '.join(got)}: "
                            f"{provider.label} is missing or failed to start, and onnxruntime "
                            "fell back without an error")


def check_session(session: Any, provider: Provider) -> None:
    """Raise ProviderError unless ``session`` got ``provider`` and, for an accelerator, gave
    it at least one node."""
    check_got(session, provider)
    if provider.accelerator:
        groups = assigned_groups(session)
        if groups and not any(ep == provider.ep for ep, _ in groups):
            total = sum(len(nodes) for _, nodes in groups)
            raise ProviderError(f"{provider.label} took none of the graph's {total} nodes: "
                                "everything would run on the CPU")


def assigned_groups(session: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """(EP name, [(node name, op key)]) per subgraph onnxruntime assigned, in its order."""
    return [(sg.ep_name, [(n.name, op_key(n.domain, n.op_type)) for n in sg.get_nodes()])
            for sg in session.get_provider_graph_assignment_info()]


def place_if_available(provider: Provider, model: Path, config: SessionConfig) -> Placement:
    """A real session's placement where ``provider`` is installed here, else a verdict
    saying why it cannot be checked (providers with no offline checker of their own)."""
    available = provider.availability()
    if available.kind != "session":
        return not_checkable(provider, available.detail)
    return session_placement(provider, model, config, f"{available.detail} session")


def session_placement(provider: Provider, model: Path, config: SessionConfig, detail: str,
                      opener: Callable[[str, SessionConfig], Any] | None = None) -> Placement:
    """Placement read from a real session on ``provider``: onnxruntime's node assignment
    (made on the graph after its BASIC optimizations, before the fusions that follow). A
    node left to the CPU gets no reason from a session beyond that."""
    opener = opener or provider.open
    if opener is None:
        raise TypeError(f"{provider.name} opens no sessions; it cannot be placed from one")
    try:
        session = opener(str(model), dataclasses.replace(config, threads=1))
        check_got(session, provider)
    except Exception as err:  # onnxruntime's own load errors: report them, do not crash
        return failed(provider, detail, err)
    groups = assigned_groups(session)
    mine = {name for ep, nodes in groups if ep == provider.ep for name, _ in nodes}
    others = [(op, f"onnxruntime assigned it to {ep}", "assigned") for ep, nodes in groups
              if ep != provider.ep for _, op in nodes]
    notes: tuple[str, ...] = ()
    if not provider.accelerator:  # the host runs one graph whatever its shape
        partitions = (len(mine),) if mine else ()
    else:
        partitions, notes = _partitions(model, groups, provider.ep)
    return Placement(provider.name, provider.ep, provider.label, "session", detail,
                     accelerator=provider.accelerator, nodes=len(mine) + len(others),
                     taken=len(mine), partitions=partitions, unsupported=group_unsupported(others),
                     notes=notes)


def _partitions(model: Path, groups: list[tuple[str, list[tuple[str, str]]]], ep: str
                ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Sizes of the groups of ``ep``'s nodes joined by tensors, over the graph the
    assignment was made on (rebuilt at BASIC level). A provider that compiles its nodes
    reports one subgraph per partition already; one with per-node kernels reports nodes."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import optimize_model

    mine = {name for e, nodes in groups if e == ep for name, _ in nodes}
    with tempfile.TemporaryDirectory(prefix="edgeopt-place-") as tmp:
        basic = Path(tmp) / "basic.onnx"
        optimize_model(Path(model), basic, use_external_initializers=True)
        graph = onnx.load(str(basic), load_external_data=False).graph
    if mine <= {n.name for n in graph.node}:
        return tuple(len(g) for g in connected_groups(graph, mine)), ()
    reported = tuple(len(nodes) for e, nodes in groups if e == ep)
    return reported, ("partitions as the provider reported its subgraphs: its nodes could not "
                      "be matched to the BASIC-optimized graph",)
