"""The context every family's quantize stage hands its quantizer: the calibration rows
and, for static plans, the rules of the execution provider the config names. Wiring the
two here keeps quantizers free of providers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.providers import provider_rules
from edgeopt.quant.registry import QuantContext


def quant_context(config: Any, calibration: tuple[dict[str, np.ndarray], ...],
                  cache_dir: Path | None = None) -> QuantContext:
    """The context ``config``'s quantizer runs with."""
    return QuantContext(calibration=calibration, cache_dir=cache_dir,
                        plan_rules=provider_rules(getattr(config, "provider_rules", "none")))

