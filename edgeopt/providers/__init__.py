"""Rules that belong to one execution provider, one module each.

A provider's rules take the float model, the typed quantization config and the plan
edgeopt built from it, and return the plan the provider can run (plain data, no
option bags). ``StaticInt8Config.provider_rules`` names the module.
"""

from __future__ import annotations

import importlib

from edgeopt.errors import RecipeError
from edgeopt.quant.plan import PlanRules

# Provider name -> module holding its ``qdq_rules(model, config, plan) -> plan``.
_MODULES = {"qnn": "edgeopt.providers.qnn"}


def provider_rules(name: str) -> PlanRules | None:
    """The ``qdq_rules`` function of provider ``name`` (None for ``"none"``)."""
    if name == "none":
        return None
    module = _MODULES.get(name)
    if module is None:
        raise RecipeError(f"no provider rules named {name!r} (known: {', '.join(sorted(_MODULES))})")
    return importlib.import_module(module).qdq_rules
