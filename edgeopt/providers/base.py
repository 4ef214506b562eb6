"""What every execution provider module declares: its names, whether it can run here, how
it opens a session and how it counts where a graph's nodes go.

A provider is plain data with two functions; one module per provider fills it in and
:mod:`edgeopt.providers.registry` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgeopt.quant.plan import PlanRules

if TYPE_CHECKING:
    from edgeopt.providers.placement import Placement

# session: a real onnxruntime session can be opened here; checker: only onnxruntime's
# static checker can say what the provider would take; unavailable: neither.
Kind = Literal["session", "checker", "unavailable"]


@dataclass(frozen=True)
class Availability:
    """Whether a provider can be used on this machine, and how or why not."""

    kind: Kind
    # How it runs here ("onnxruntime-qnn 2.7.0, HTP simulator"), or why it cannot and
    # what to do about it.
    detail: str


@dataclass(frozen=True)
class SessionConfig:
    """How :func:`edgeopt.providers.open_session` opens a session."""

    threads: int = 2
    # False: a node the provider does not take makes the session fail instead of
    # running on the CPU.
    allow_fallback: bool = True
    # onnxruntime graph transformers to skip at load (a bundle's manifest lists them).
    disabled_optimizers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


# (model path or bytes, config) -> onnxruntime.InferenceSession on that provider.
Opener = Callable[[Any, SessionConfig], Any]


@dataclass(frozen=True)
class Provider:
    """One execution provider as edgeopt knows it."""

    name: str  # edgeopt's short name: "qnn"
    ep: str  # onnxruntime's name: "QNNExecutionProvider"
    label: str  # what a release manager reads: "QNN HTP"
    availability: Callable[[], Availability]
    # (model, how the app opens it) -> where its nodes go
    place: Callable[[Path, SessionConfig], Placement]
    open: Opener | None = None  # None: no session can be opened by edgeopt
    # False for the CPU: it is the host, so partitions and fallbacks mean nothing there.
    accelerator: bool = True
    # Needs one static input shape (recipe quantize.fixed_batch / fixed_sequence).
    fixed_shapes: bool = False
    # Quantization rules for a static QDQ plan (``provider_rules`` in a recipe).
    rules: PlanRules | None = None
    # Provider options the placement was measured with, which an app must pass too (the
    # bundle's manifest lists them).
    app_options: tuple[tuple[str, str], ...] = ()
    # Where its tensors live when not in host memory ("cuda"): a benchmark binds inputs and
    # outputs there (IO binding), so host copies are not timed. None: host memory.
    io_device: str | None = None
