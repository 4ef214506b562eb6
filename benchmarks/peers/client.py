"""The harness side of the peers protocol: one worker process per variant."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


class WorkerError(RuntimeError):
    """A worker replied with an error, or died; the message ends with its log's tail."""


class Worker:
    """A started worker: ``request(op, ...)`` sends one JSON line and reads one back.

    Its stderr goes to ``log`` (runtimes log freely there); stdout is the protocol.
    """

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("w", encoding="utf-8")
        self._proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log_file, text=True, cwd=cwd,
                                      env={**os.environ, **(env or {})})

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None  # set by Popen
        try:
            self._proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"{self.name} died before {op}; {self._tail()}") from None
        line = self._proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.name} exited during {op}; {self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"{self.name} failed {op}: {reply.get('error')}; {self._tail()}")
        return reply

    def close(self) -> None:
        """Ask the worker to quit; kill it if it does not within 30 s."""
        if self._proc.poll() is None:
            try:
                self.request("quit")
                self._proc.wait(timeout=30)
            except (WorkerError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log_file.close()

    def _tail(self) -> str:
        self._log_file.flush()
        lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return "log tail: " + (" | ".join(lines[-3:]) if lines else "(empty)") + f" ({self.log})"

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
