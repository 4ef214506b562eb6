"""Cold start and peak memory, measured in a fresh Python process per grid point, so no
cache, allocator pool or loaded library of the benchmark's own process hides them.

The child imports onnxruntime and loads the feeds, notes its peak RSS (the baseline),
then times session creation (through the provider's opener, as the warm benchmark does)
and the first run, runs ``AFTER_RUNS`` more, and reports its peak RSS again
(the largest resident set the process ever had, see :func:`peak_rss_bytes`).
Run as ``python -m edgeopt.benchgrid.coldstart``; it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Runs after the first, so peak memory includes the steady-state arena, not only the first.
AFTER_RUNS = 3
MEMORY_METHOD = ("peak RSS (Linux VmHWM) of a fresh Python process that imported "
                 "onnxruntime, opened the session and ran it 1 + 3 times; 'over baseline' "
                 "subtracts that process's peak before the session was created")


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far, or None where it cannot be read.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec; ``ru_maxrss`` there
    keeps the parent's peak across fork and exec (a 400 MB benchmark process would hide
    a 60 MB child). Elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeopt.benchgrid.coldstart")
    parser.add_argument("model")
    parser.add_argument("feeds", help=".npz of the inputs")
    parser.add_argument("--ep", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--disable", action="append", default=[])
    args = parser.parse_args(argv)

    import onnxruntime  # noqa: F401  (imported before the baseline: not part of the cold start)

    from edgeopt.benchgrid.runner import make_runner
    from edgeopt.errors import EdgeoptError
    from edgeopt.providers import get_provider, open_session

    with np.load(args.feeds) as data:
        feeds = {k: data[k] for k in data.files}
    provider = get_provider(args.ep)
    baseline = peak_rss_bytes()
    start = time.perf_counter()
    try:
        session = open_session(args.model, provider, threads=args.threads,
                               disabled_optimizers=tuple(args.disable))
    except EdgeoptError as err:
        print(json.dumps({"error": str(err)}))
        return 3
    opened = time.perf_counter()
    run = make_runner(session, provider, feeds)
    run()
    first = time.perf_counter()
    for _ in range(AFTER_RUNS):
        run()
    peak = peak_rss_bytes()
    print(json.dumps({"session_s": opened - start, "first_run_s": first - opened,
                      "cold_start_s": first - start, "baseline_rss_bytes": baseline,
                      "peak_rss_bytes": peak}))
    return 0


def measure(model: Path, provider: str, threads: int, feeds: dict[str, np.ndarray],
            disabled_optimizers: tuple[str, ...] = (), timeout_s: float = 600) -> dict[str, Any]:
    """Cold start and peak memory of ``model`` on ``provider`` from a fresh process; a
    dict with ``error`` when the child could not open or run the session."""
    root = str(Path(__file__).resolve().parents[2])  # this edgeopt, not another install
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="edgeopt-cold-") as tmp:
        npz = Path(tmp) / "feeds.npz"
        np.savez(npz, **feeds)
        cmd = [sys.executable, "-m", "edgeopt.benchgrid.coldstart", str(model), str(npz),
               "--ep", provider, "--threads", str(threads)]
        cmd += [arg for name in disabled_optimizers for arg in ("--disable", name)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"the fresh process took over {timeout_s:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the fresh process failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(_child())
