"""NVIDIA CUDA execution provider (the ``onnxruntime-gpu`` package).

``onnxruntime-gpu`` installs the same ``onnxruntime`` module as the CPU package, so the two
cannot share an environment (``make install-gpu`` builds ``.venv-gpu`` with it); and where
the driver or the CUDA libraries are missing it starts on the CPU with only a warning.
The availability check asks the driver itself for a device, and
:func:`edgeopt.providers.open_session` turns a silent fallback into an error.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

from edgeopt.errors import ProviderError
from edgeopt.providers.base import Availability, Provider, SessionConfig
from edgeopt.providers.placement import Placement
from edgeopt.providers.session import builtin_opener, place_if_available

EP = "CUDAExecutionProvider"
_DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def driver_problem() -> str | None:
    """Why the NVIDIA driver cannot give a CUDA device here, or None when it can."""
    try:
        driver = ctypes.CDLL(_DRIVER)
    except OSError:
        return f"the NVIDIA driver is not installed ({_DRIVER} does not load): no usable GPU here"
    rc = driver.cuInit(0)
    if rc != 0:  # 100: CUDA_ERROR_NO_DEVICE
        return f"the NVIDIA driver finds no usable GPU (cuInit error {rc})"
    count = ctypes.c_int(0)
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "the NVIDIA driver reports no CUDA device"
    return None


def _availability() -> Availability:
    import onnxruntime as ort

    if EP not in ort.get_available_providers():
        return Availability("unavailable", f"this onnxruntime ({ort.__version__}, the CPU package) "
                            "has no CUDA provider; run `make install-gpu` (a .venv-gpu with "
                            "onnxruntime-gpu, which replaces the CPU package) on a machine with an "
                            "NVIDIA GPU")
    problem = driver_problem()
    if problem is not None:
        return Availability("unavailable", f"onnxruntime-gpu {ort.__version__} is installed but "
                            f"{problem}")
    return Availability("session", f"onnxruntime-gpu {ort.__version__}")


_builtin = builtin_opener(EP)


def _open(model: Any, config: SessionConfig) -> Any:
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # finds CUDA/cuDNN installed as pip packages (nvidia-*)
        preload()
    session = _builtin(model, config)
    if EP not in session.get_providers():
        raise ProviderError(f"onnxruntime-gpu {ort.__version__} could not start CUDA (a GPU is "
                            "there, but the CUDA or cuDNN libraries it was built for did not load); "
                            "install them, e.g. pip install 'onnxruntime-gpu[cuda,cudnn]'")
    return session


def _place(model: Path, config: SessionConfig) -> Placement:
    return place_if_available(PROVIDER, model, config)


PROVIDER = Provider(name="cuda", ep=EP, label="CUDA", availability=_availability,
                    place=_place, open=_open, io_device="cuda")
