"""Apple CoreML execution provider (Neural Engine, GPU or CPU on iOS and macOS). It runs
only on Apple devices, so here its placement comes from onnxruntime's usability checker
(:mod:`edgeopt.providers.mobile_check`), against the ML Program op list: the format
onnxruntime's CoreML provider is asked for on current iOS (``ModelFormat=MLProgram``). The
older NeuralNetwork format's figure is added as a note."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.mobile_check import checker_placements
from edgeopt.providers.placement import Placement

_MLPROGRAM = "coreml_supported_mlprogram_ops.md"
_NEURALNETWORK = "coreml_supported_neuralnetwork_ops.md"


def _availability() -> Availability:
    return Availability("checker", "runs only on Apple devices; onnxruntime's usability "
                        "checker says what it would take")


def _checker(ops_file: str) -> Any:
    from onnxruntime.tools.mobile_helpers.usability_checker import check_coreml_partitions

    return lambda model, fixed: check_coreml_partitions(model, fixed, ops_file)


def _place(model: Path, config: SessionConfig) -> Placement:
    del config  # a checker opens no session
    placement, legacy = checker_placements(PROVIDER, model, [
        (_checker(_MLPROGRAM), _MLPROGRAM), (_checker(_NEURALNETWORK), _NEURALNETWORK)])
    note = (f"NeuralNetwork format instead: {legacy.taken} of {legacy.nodes} nodes in "
            f"{len(legacy.partitions)} partition(s)")
    return dataclasses.replace(placement, notes=(note, *placement.notes))


PROVIDER = Provider(name="coreml", ep="CoreMLExecutionProvider", label="CoreML",
                    availability=_availability, place=_place)
