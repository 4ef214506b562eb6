"""arm64 parity under emulation: compiled bundles on the aarch64 onnxruntime (qemu-user,
Neoverse-N1) against the x86 onnxruntime and PyTorch, with the wall time each took.

    python benchmarks/bench_arm64.py --bundle sst2-int8=out/sst2 --bundle minilm-int8=out/e \\
        --rows 200 --out benchmarks/results/arm64-emulated.json

Each bundle runs on its own eval data (the one its report names) unless --data is given;
a causal LM on --decoder-rows prompts of the built-in sentences. Every arm64 time is
emulated (~30x slower than a real core): it says how long the check takes, not how fast
a phone is. Needs `make arm64-env`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from edgeopt.evaldata import load_eval_data
from edgeopt.verify.run import verify_bundle


def _cpu() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("Model name")), platform.processor())
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--rows", type=int, default=200, help="rows per encoder bundle")
    parser.add_argument("--decoder-rows", type=int, default=8, help="prompts per causal LM")
    parser.add_argument("--data", help="rows for every encoder bundle instead of its own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    results = []
    for item in args.bundle:
        label, _, path = item.partition("=")
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        decoder = manifest["task"] == "text-generation"
        data = None if decoder or not args.data else load_eval_data(
            args.data, tuple(manifest["label_names"]) if manifest.get("label_names") else None)
        start = time.perf_counter()
        result = verify_bundle(path, "arm64", data=data, threads=args.threads,
                               rows=args.decoder_rows if decoder else args.rows)
        wall = time.perf_counter() - start
        results.append({"label": label, "verify_wall_seconds": wall, **result.to_dict()})
        print(result.to_markdown())
        print(f"verify wall time (emulated arm64 + x86 + PyTorch): {wall:.1f} s\n", flush=True)
    record = {"machine": _cpu(), "python": platform.python_version(), "results": results}
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
