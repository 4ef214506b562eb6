"""Runs one ONNX graph on batches of ``.npy`` feeds and writes its outputs as ``.npy``.

This file is executed by the emulated arm64 python (see ``tools/arm64-env.sh``), which has
numpy and onnxruntime only: it must not import edgeopt. Arrays go through ``.npy`` files
(never pickles), the job and the timings through JSON.

    python worker.py JOB_DIR      # reads JOB_DIR/job.json, writes JOB_DIR/result.json

job.json: {"model": path, "threads": n, "disabled_optimizers": [...], "output": name,
"inputs": [names], "batches": n}; batch i reads JOB_DIR/i/<k>.npy for the k-th input name
and writes JOB_DIR/i/out.npy.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path


def main(job_dir: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(job["threads"])
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    start = time.perf_counter()
    session = ort.InferenceSession(job["model"], sess_options=options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=job["disabled_optimizers"] or None)
    session_seconds = time.perf_counter() - start
    run_seconds = []
    for i in range(int(job["batches"])):
        folder = job_dir / str(i)
        feeds = {name: np.load(folder / f"{k}.npy") for k, name in enumerate(job["inputs"])}
        start = time.perf_counter()
        (out,) = session.run([job["output"]], feeds)
        run_seconds.append(time.perf_counter() - start)
        np.save(folder / "out.npy", out)
    result = {"machine": platform.machine(), "onnxruntime": ort.__version__,
              "numpy": np.__version__, "providers": session.get_providers(),
              "session_seconds": session_seconds, "run_seconds": run_seconds}
    (job_dir / "result.json").write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
