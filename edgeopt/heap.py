"""Keep a loaded model's transient copies from staying resident (glibc's heap).

onnxruntime builds each weight tensor from the model file's bytes and then frees the
bytes. glibc serves big allocations with mmap, but after such a buffer is freed it raises
its mmap threshold (up to 32 MiB), so the next ones land on the heap, where freed space
between live blocks stays resident. Measured on the SmolLM2 arm64-int4 bundle, fresh
processes: the session held 206 or 239 MB of RSS from run to run under glibc's default,
185 MB in every run with the threshold fixed at 128 KiB (benchmarks/RESULTS.md, issue 19).

The setting is process-wide, so only processes that exist to run a model call
:func:`release_large_frees` (``edgeopt generate``, the memory probe, the benchmark
workers). An app on glibc gets the same with ``MALLOC_MMAP_THRESHOLD_=131072`` in its
environment; Android's and Apple's allocators do not have this behaviour.

Small allocations are the other half: parsing ``tokenizer.json`` leaves ~17 MB of freed
blocks inside the heap (33 MB of RSS for a 3.5 MB file, 16 MB after a trim), so loaders
call :func:`trim` once the tokenizer is built, before the session's load sets the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's <malloc.h>
DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting threshold; fixing it stops the drift


def release_large_frees(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Have glibc serve every allocation above ``threshold`` bytes with mmap, so freeing
    one returns its pages to the OS. Returns False (and changes nothing) off glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def trim() -> bool:
    """Return the heap's free pages to the OS now (glibc's ``malloc_trim``). Changes no
    setting, so library code may call it after a big load. False off glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
