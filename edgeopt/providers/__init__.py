"""Execution providers, one module each (cpu, cuda, qnn, nnapi, coreml, xnnpack).

A provider module knows how to open a session on its provider, what it needs from a graph
(quantization rules, static shapes) and how to count where a graph's nodes go
(:class:`~edgeopt.providers.base.Provider`). :func:`open_session` never lets onnxruntime
fall back silently to the CPU. A provider's quantization rules take the float model, the
typed quantization config and the plan edgeopt built from it, and return the plan the
provider can run (plain data, no option bags); ``StaticInt8Config.provider_rules`` names
the provider.
"""

from __future__ import annotations

from edgeopt.errors import RecipeError
from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.registry import PROVIDERS, get_provider, parse_providers
from edgeopt.providers.session import open_session
from edgeopt.quant.plan import PlanRules

__all__ = ["PROVIDERS", "Availability", "Provider", "SessionConfig", "get_provider",
           "open_session", "parse_providers", "provider_rules"]


def provider_rules(name: str) -> PlanRules | None:
    """The ``qdq_rules`` function of provider ``name`` (None for ``"none"``)."""
    if name == "none":
        return None
    p = PROVIDERS.get(name)
    if p is None or p.rules is None:
        known = sorted(n for n, q in PROVIDERS.items() if q.rules is not None)
        raise RecipeError(f"no provider rules named {name!r} (known: {', '.join(known)})")
    return p.rules
