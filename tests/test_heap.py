"""edgeopt.heap: a fixed mmap threshold returns freed large buffers to the OS (glibc)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting exists only in glibc's allocator")

# What both children start with: libc's allocator through ctypes, and holes(n, size):
# n buffers of size bytes, written, then every other one freed, so each freed one is a
# hole between live blocks that the heap cannot give back from its top. It returns the
# RSS the holes still hold, in MiB.
_PRELUDE = r"""
import ctypes, json, sys
import psutil
from edgeopt import heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc.argtypes = [ctypes.c_size_t]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
rss = lambda: psutil.Process().memory_info().rss
live = []
def holes(n, size):
    blocks = [libc.malloc(size) for _ in range(n)]
    for b in blocks:
        libc.memset(b, 1, size)
    full = rss()
    for b in blocks[::2]:
        libc.free(b)
    live.extend(blocks[1::2])
    return lambda: (rss() - full) / 2**20 + n // 2 * size / 2**20
"""

# The pattern a model load makes: one big buffer freed (glibc then raises its threshold),
# then 1 MiB buffers, half of them freed.
_CHILD = _PRELUDE + r"""
applied = heap.release_large_frees() if sys.argv[1] == "release" else False
big = libc.malloc(16 << 20); libc.memset(big, 1, 16 << 20); libc.free(big)
kept = holes(64, 1 << 20)
print(json.dumps({"applied": applied, "kept_mb": kept()}))
"""


def _kept(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fixed_threshold_returns_freed_buffers_that_glibc_default_keeps() -> None:
    default, fixed = _kept("default"), _kept("release")
    assert fixed["applied"] is True
    assert default["kept_mb"] > 24, default  # 32 MiB freed, nearly all still resident
    assert fixed["kept_mb"] < 4, fixed       # each buffer was its own mapping, now unmapped


# Heap-sized blocks (below any mmap threshold), half freed: the holes stay resident until
# a trim hands their whole pages back.
_TRIM_CHILD = _PRELUDE + r"""
kept = holes(4096, 16 << 10)
before = kept()
trimmed = heap.trim()
print(json.dumps({"trimmed": trimmed, "kept_before_mb": before, "kept_after_mb": kept()}))
"""


def test_trim_returns_the_free_pages_between_live_blocks() -> None:
    proc = subprocess.run([sys.executable, "-c", _TRIM_CHILD], capture_output=True, text=True,
                          check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["trimmed"] is True
    assert out["kept_before_mb"] > 24, out  # 32 MiB of holes, still resident
    assert out["kept_after_mb"] < 12, out   # their whole pages went back
