"""onnxruntime's CPU execution provider (MLAS kernels): the host every other provider
falls back to, and what edgeopt validates and benchmarks on."""

from __future__ import annotations

from pathlib import Path

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.placement import Placement
from edgeopt.providers.session import CPU_EP, builtin_opener, session_placement


def _availability() -> Availability:
    import onnxruntime as ort

    return Availability("session", f"onnxruntime {ort.__version__}")


def _place(model: Path, config: SessionConfig) -> Placement:
    return session_placement(PROVIDER, model, config, f"{_availability().detail} session")


PROVIDER = Provider(name="cpu", ep=CPU_EP, label="CPU EP", availability=_availability,
                    place=_place, open=builtin_opener(CPU_EP), accelerator=False)
