"""Android NNAPI execution provider: the phone's NPU, DSP or GPU through Android's Neural
Networks API. It runs only on Android, so here its placement comes from onnxruntime's
usability checker (:mod:`edgeopt.providers.mobile_check`). NNAPI needs fixed input shapes:
a node with a dynamic input stays on the CPU."""

from __future__ import annotations

from pathlib import Path

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.mobile_check import checker_placements
from edgeopt.providers.placement import Placement


def _availability() -> Availability:
    return Availability("checker", "runs only on Android; onnxruntime's usability checker "
                        "says what it would take")


def _place(model: Path, config: SessionConfig) -> Placement:
    del config  # a checker opens no session
    from onnxruntime.tools.mobile_helpers.usability_checker import check_nnapi_partitions

    (placement,) = checker_placements(PROVIDER, model,
                                      [(check_nnapi_partitions, "nnapi_supported_ops.md")])
    return placement


PROVIDER = Provider(name="nnapi", ep="NnapiExecutionProvider", label="NNAPI",
                    availability=_availability, place=_place, fixed_shapes=True)
