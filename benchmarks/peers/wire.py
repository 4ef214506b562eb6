"""The worker side of the peers protocol: JSON lines, one request on stdin, one reply on stdout.

Standard library only: the genai worker imports this from ``.venv-peers``, where edgeopt
is not installed. Every worker answers ``rss`` and ``quit`` here; the runtime-specific
operations (``load``, ``generate``, ``score``) come from its handler table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss() -> dict[str, int]:
    """This process's resident-set high-water mark and current RSS, in bytes.

    VmHWM rather than ru_maxrss: ru_maxrss survives exec, so a child started from a big
    parent can report the parent's RSS at fork time. The kernel folds the current RSS
    into VmHWM lazily, so the peak is the larger of the two.
    """
    now = _status_kib("VmRSS") * 1024
    return {"peak_rss_bytes": max(_status_kib("VmHWM") * 1024, now), "rss_bytes": now}


def timed_greedy(first: Callable[[], int], step: Callable[[int], int], new_tokens: int) -> dict[str, Any]:
    """Run ``first`` (prefill + first pick) then ``step`` until ``new_tokens`` are out.

    Prefill is the time to the first token; decode is the time of the remaining
    ``new_tokens - 1`` single-token steps, the same split for every runtime.
    """
    start = time.perf_counter()
    tokens = [first()]
    first_at = time.perf_counter()
    while len(tokens) < new_tokens:
        tokens.append(step(tokens[-1]))
    end = time.perf_counter()
    return {"tokens": tokens, "prefill_s": first_at - start, "decode_s": end - first_at,
            "decode_steps": new_tokens - 1}


def serve(handlers: dict[str, Handler]) -> None:
    """Answer requests until ``quit`` or end of input."""
    # The protocol gets a private copy of stdout; fd 1 then points at stderr, so native
    # libraries printing to stdout cannot interleave with replies.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    table: dict[str, Handler] = {"rss": lambda _req: rss(), **handlers}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            channel.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            if op not in table:
                raise KeyError(f"unknown op {op!r}; known: {', '.join(sorted(table))}")
            reply = {"ok": True, **table[op](request)}
        except Exception as err:  # reported to the harness; the worker stays up
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        channel.write(json.dumps(reply) + "\n")
