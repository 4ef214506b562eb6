"""The call a benchmark times: ``session.run`` on host arrays, or, for a provider whose
tensors live on a device (CUDA), a run on inputs and outputs bound there once (IO
binding), so the host-device copies an app can avoid are not timed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeopt.providers.base import Provider


def plain_runner(session: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """``session.run(None, feeds)``, nothing else: what a bare loop would time."""
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    return lambda: session.run(None, feeds)


class BoundRun:
    """A run with every input copied to ``device`` once and every output bound there;
    a call returns the IO binding (``copy_outputs_to_cpu()`` reads the outputs)."""

    def __init__(self, session: Any, feeds: dict[str, np.ndarray], device: str) -> None:
        import onnxruntime as ort

        self.session = session
        self.binding = session.io_binding()
        names = {i.name for i in session.get_inputs()}
        # Held here: the bound OrtValues must live as long as the binding.
        self.values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, 0)
                       for k, v in feeds.items() if k in names}
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, device)

    def __call__(self) -> Any:
        self.session.run_with_iobinding(self.binding)
        return self.binding


def make_runner(session: Any, provider: Provider, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    """The timed call for ``provider``: IO binding on its device, else a plain run."""
    if provider.io_device is not None:
        return BoundRun(session, feeds, provider.io_device)
    return plain_runner(session, feeds)
