"""NVIDIA CUDA execution provider (the ``onnxruntime-gpu`` package).

``onnxruntime-gpu`` installs the same ``onnxruntime`` module as the CPU package, so the two
cannot share an environment; and where the CUDA libraries are missing it starts on the
CPU with only a warning. :func:`edgeopt.providers.open_session` turns that into an error.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.placement import Placement, not_checkable
from edgeopt.providers.session import builtin_opener, session_placement

EP = "CUDAExecutionProvider"


def _availability() -> Availability:
    import onnxruntime as ort

    if EP in ort.get_available_providers():
        return Availability("session", f"onnxruntime-gpu {ort.__version__}")
    return Availability("unavailable", "this onnxruntime has no CUDA provider; install "
                        "onnxruntime-gpu in its own environment (it replaces the CPU package) "
                        "on a machine with an NVIDIA GPU")


def _place(model: Path, config: SessionConfig) -> Placement:
    available = _availability()
    if available.kind != "session":
        return not_checkable(PROVIDER, available.detail)
    return session_placement(PROVIDER, model, config, f"{available.detail} session")


PROVIDER = Provider(name="cuda", ep=EP, label="CUDA", availability=_availability,
                    place=_place, open=builtin_opener(EP))
