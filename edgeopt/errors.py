"""One exception tree for edgeopt.

User mistakes raise a subclass of :class:`UsageError`; the CLI prints its message on
one line and exits 2. :class:`ParityError` means the artifact was built but broke a
gate; the CLI exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeoptError(Exception):
    """Base of every error edgeopt raises on purpose."""

    exit_code = 2


class UsageError(EdgeoptError):
    """The user asked for something that cannot be done as asked (exit 2)."""


class ModelError(UsageError):
    """The model path or weights are missing, unsafe, corrupt or unsupported."""


class RecipeError(UsageError):
    """A target or recipe is unknown or malformed."""


class DataError(UsageError):
    """Eval or calibration data is missing or malformed."""


class OutputExistsError(UsageError):
    """The output exists and --force was not given."""


class BundleError(UsageError):
    """A bundle on disk is malformed or points outside itself."""


class BudgetError(UsageError):
    """A release budget file is missing or malformed (``edgeopt check --budget``)."""


class ProviderError(UsageError):
    """An execution provider is unknown, not installed here, or was silently replaced by
    another one (onnxruntime falls back to the CPU without an error)."""


class PlatformError(UsageError):
    """An emulated platform (the arm64 onnxruntime under qemu) is not set up or failed."""


class PreflightError(EdgeoptError):
    """The target's accelerator cannot run the compiled graph as one graph and the
    recipe requires it (``preflight.require_one_graph``); exit 1, like a failed gate."""

    exit_code = 1


class ParityError(EdgeoptError):
    """The compiled artifact failed one or more parity gates (exit 1).

    Carries every failing check at once so the caller sees the whole picture.
    """

    exit_code = 1

    def __init__(self, failures: list[str], report: object | None = None) -> None:
        self.failures = list(failures)
        self.report = report
        super().__init__("parity gates failed: " + "; ".join(self.failures))
