"""Embedding cosine on sentences no compile or test reads: all-MiniLM-L6-v2 per target,
judged on SST-2 dev (what tests/test_real_encoders.py reads) and on disjoint slices of
SST-2 train, at the validation's batch of 32 and at batch 1.

    python benchmarks/bench_embed_heldout.py [--targets arm64-int8,benchmarks/recipes/X.yaml]
                                             [--offsets 3,7,13] [--rows 3000]
                                             [--out benchmarks/results/embed-heldout.json]

Each target compiles once, calibrated as the test does (a sample of the dev rows). A
slice is every 20th train row from an offset, so slices never share a row, and no train
row is a dev row. Dynamic INT8 scales activations per tensor, so rows batched together
share one scale: the lowest cosine depends on the batch, and both batch sizes are shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_encoders import machine

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BATCHES = (32, 1)


def slices(train: Path, offsets: list[int], rows: int, tmp: Path) -> dict[str, Path]:
    """One TSV per offset: every 20th train sentence from it, at most ``rows``."""
    sentences = [line.split("\t")[0] for line in train.read_text(encoding="utf-8").splitlines()[1:]]
    files = {}
    for offset in offsets:
        path = tmp / f"train-offset{offset}.tsv"
        path.write_text("sentence\n" + "\n".join(sentences[offset::20][:rows]) + "\n", encoding="utf-8")
        files[f"train offset {offset}"] = path
    return files


def cosines(task, bundle: Path, data, reference: np.ndarray, batch: int) -> np.ndarray:
    from edgeopt.runtime import make_session, run_one
    from edgeopt.validate import batched_outputs

    session = make_session(bundle / "model.onnx", threads=2)
    out = batched_outputs(task, data, lambda feeds: run_one(session, feeds), batch_size=batch).values
    return (out * reference).sum(-1) / np.linalg.norm(out, axis=-1) / np.linalg.norm(reference, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="arm64-int8")
    parser.add_argument("--offsets", default="3,7,13")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "embed-heldout.json"))
    args = parser.parse_args()

    import edgeopt
    from edgeopt import zoo
    from edgeopt.evaldata import load_eval_data
    from edgeopt.source import inspect_model
    from edgeopt.tasks import ENCODER_TASKS, load_torch
    from edgeopt.validate import batched_outputs

    dev, train = SHARED / "data" / "sst2" / "dev.tsv", SHARED / "data" / "sst2" / "train.tsv"
    if not dev.is_file() or not train.is_file():
        sys.exit("needs ../shared/data/sst2/{dev,train}.tsv")
    model = zoo.fetch("minilm")
    src = inspect_model(str(model))
    task = ENCODER_TASKS[src.task](src, load_torch(src))
    result: dict = {"machine": machine(), "command": " ".join(sys.argv), "rows": {}, "targets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"dev": dev} | slices(train, [int(o) for o in args.offsets.split(",")], args.rows, Path(tmp))
        data = {name: load_eval_data(path) for name, path in sets.items()}
        refs = {name: batched_outputs(task, d, task.torch_outputs).values for name, d in data.items()}
        result["rows"] = {name: len(d) for name, d in data.items()}
        for target in args.targets.split(","):
            chosen = {"recipe": target} if target.endswith(".yaml") else {"target": target}
            bundle = Path(tmp) / Path(target).stem
            edgeopt.compile(str(model), **chosen, out=bundle, eval_data=str(dev), fail_on_parity=False)
            scores = {}
            for name in data:
                for batch in BATCHES:
                    c = cosines(task, bundle, data[name], refs[name], batch)
                    scores[f"{name} / batch {batch}"] = {"min": float(c.min()), "mean": float(c.mean())}
                    print(f"  {target} {name} batch {batch}: min {c.min():.5f} mean {c.mean():.5f}",
                          file=sys.stderr, flush=True)
            result["targets"][target] = {"size_bytes": (bundle / "model.onnx").stat().st_size,
                                         "cosine": scores}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


def markdown(r: dict) -> str:
    keys = list(next(iter(r["targets"].values()))["cosine"])
    lines = [f"Machine: {r['machine']}. Lowest cosine to PyTorch fp32 (mean in brackets).", "",
             "| target | MB | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    for target, t in r["targets"].items():
        cells = [f"{t['cosine'][k]['min']:.4f} ({t['cosine'][k]['mean']:.4f})" for k in keys]
        lines.append(f"| {target} | {t['size_bytes'] / 1e6:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
