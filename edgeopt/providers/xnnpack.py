"""XNNPACK execution provider (ARM/x86 CPU kernels for mobile and web).

It ships in onnxruntime's Android, iOS and web packages, not in the wheels on PyPI, and
onnxruntime has no static checker for it. Here it is therefore "not checkable" unless the
onnxruntime in use was built with it; no figures are ever estimated for it.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.placement import Placement
from edgeopt.providers.session import builtin_opener, place_if_available

EP = "XnnpackExecutionProvider"


def _availability() -> Availability:
    import onnxruntime as ort

    if EP in ort.get_available_providers():
        return Availability("session", f"onnxruntime {ort.__version__} built with XNNPACK")
    return Availability("unavailable", "no onnxruntime package installable here includes the "
                        "XNNPACK provider (it ships in onnxruntime-android, the iOS pods and "
                        "onnxruntime-web) and onnxruntime has no static checker for it; check "
                        "it on the device")


def _place(model: Path, config: SessionConfig) -> Placement:
    return place_if_available(PROVIDER, model, config)


PROVIDER = Provider(name="xnnpack", ep=EP, label="XNNPACK", availability=_availability,
                    place=_place, open=builtin_opener(EP))
