"""edgeopt: compile fine-tuned transformer models into validated on-device bundles.

``edgeopt.compile`` is resolved lazily so ``import edgeopt`` (and ``edgeopt --help``)
stays instant; torch and onnxruntime load only when a compile starts.
"""

from __future__ import annotations

from typing import Any

from edgeopt.version import __version__

__all__ = ["__version__", "compile"]


def __getattr__(name: str) -> Any:
    if name == "compile":
        from edgeopt.api import compile as _compile

        return _compile
    raise AttributeError(f"module 'edgeopt' has no attribute {name!r}")
