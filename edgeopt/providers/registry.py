"""The execution providers edgeopt knows, by name: one explicit dict that refuses
duplicates. Each entry's module says how it runs and how its placement is measured."""

from __future__ import annotations

from edgeopt.errors import ProviderError
from edgeopt.providers import coreml, cpu, cuda, nnapi, qnn, xnnpack
from edgeopt.providers.base import Provider


def _register(*providers: Provider) -> dict[str, Provider]:
    table: dict[str, Provider] = {}
    for p in providers:
        for key in (p.name, p.ep):
            if key in table:
                raise ValueError(f"execution provider {key!r} is registered twice")
            table[key] = p
    return {p.name: p for p in providers}


# edgeopt name -> provider; onnxruntime's names resolve through get_provider.
PROVIDERS: dict[str, Provider] = _register(
    cpu.PROVIDER, cuda.PROVIDER, qnn.PROVIDER, nnapi.PROVIDER, coreml.PROVIDER, xnnpack.PROVIDER,
)
_BY_EP = {p.ep.lower(): p for p in PROVIDERS.values()}


def get_provider(name: str) -> Provider:
    """The provider named ``name``: edgeopt's short name ("qnn") or onnxruntime's
    ("QNNExecutionProvider"), any case."""
    key = name.strip().lower()
    found = PROVIDERS.get(key) or _BY_EP.get(key)
    if found is None:
        raise ProviderError(f"no execution provider named {name!r}; known: "
                            f"{', '.join(PROVIDERS)}")
    return found


def parse_providers(spec: str) -> list[Provider]:
    """``"qnn,nnapi,cpu"`` -> those providers, in order, each once."""
    names = [n for n in (part.strip() for part in spec.split(",")) if n]
    if not names:
        raise ProviderError("--ep names no provider; give a comma-separated list such as "
                            f"{','.join(PROVIDERS)}")
    out: list[Provider] = []
    for name in names:
        p = get_provider(name)
        if p not in out:
            out.append(p)
    return out
