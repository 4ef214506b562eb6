"""Distillation figures on MiniLM-SST2: the value of the teacher, and one full run.

    python benchmarks/bench_distill.py teacher-value [--steps 400] [--seeds 0,1,2]
    python benchmarks/bench_distill.py full [--steps 1500] [--minutes 18] [--layers 1,3,5]
    python benchmarks/bench_distill.py layers [--steps 150]   # which 3 layers to start from
    python benchmarks/bench_distill.py chain [--recipe recipes/minilm-sst2-mobile.yaml] [--reuse DIR]

teacher-value: labels for only 8,000 SST-2 train rows (picked with seed 0), the rest as
unlabelled text. The distilled 3-layer student (KL on the teacher + cross-entropy where a
row has a label) against the same student trained on the 8,000 labelled rows alone
(cross-entropy only), same steps, same batch, same seeds. Each run is the distill stage
itself (edgeopt.prepare.distill) with a compile-like context, without the export after it.
Judged on the 872 SST-2 dev rows. Raw figures go to benchmarks/results/distill.json.

chain: the whole front half as a user runs it - ``edgeopt compile`` of the teacher with
the recipe (distill -> prune -> trim-vocab -> recover -> arm64-int8), timed end to end -
then the teacher's own arm64-int8 bundle compiled in the same run, and the two bundles
and PyTorch eager of the teacher side by side: size, SST-2 dev accuracy, label
agreement with the teacher, p50 latency at batch 1, sequence 128, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEACHER = SHARED / "models" / "minilm-sst2"
TRAIN, DEV = SHARED / "data" / "sst2" / "train.tsv", SHARED / "data" / "sst2" / "dev.tsv"
RESULTS = REPO / "benchmarks" / "results" / "distill.json"
LABELLED = 8000


def split_train(tmp: Path, unlabelled: int, seed: int = 0) -> tuple[Path, Path]:
    """(8,000 labelled rows + ``unlabelled`` others with empty labels, the 8,000 alone)."""
    lines = TRAIN.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    order = np.random.default_rng(seed).permutation(len(rows))
    keep = set(order[:LABELLED].tolist())
    rest = order[LABELLED:LABELLED + unlabelled].tolist() if unlabelled else order[LABELLED:].tolist()
    labelled = [rows[i] for i in sorted(keep)]
    plain = [rows[i].rsplit("\t", 1)[0] + "\t" for i in sorted(rest)]
    mixed, only = tmp / "sst2-8k-plus-text.tsv", tmp / "sst2-8k.tsv"
    mixed.write_text("\n".join([header, *labelled, *plain]) + "\n", encoding="utf-8")
    only.write_text("\n".join([header, *labelled]) + "\n", encoding="utf-8")
    return mixed, only


def run_stage(config, train: Path, ckpt_out: Path) -> dict:
    """The distill stage on the real teacher, judged on SST-2 dev; its record's notes."""
    from edgeopt.artifact import PassRecord
    from edgeopt.evaldata import load_eval_data
    from edgeopt.prepare import runner_for
    from edgeopt.source import inspect_model
    from edgeopt.tasks import load_torch

    src = inspect_model(str(TEACHER))
    teacher = load_torch(src)
    request = SimpleNamespace(src=src, train_data=train, out=ckpt_out,
                              inputs=SimpleNamespace(data=load_eval_data(DEV, src.label_names)))
    ctx = SimpleNamespace(request=request, record=PassRecord("prepare:distill", {}), teacher=teacher)
    start = time.perf_counter()
    runner_for(config)(teacher, config, ckpt_out.parent, ctx)
    return {**ctx.record.notes, "wall_s": round(time.perf_counter() - start, 1)}


def _save(key: str, value) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1, default=str))


def teacher_value(args, tmp: Path) -> None:
    from edgeopt.recipe_prepare import DistillConfig

    unlabelled = args.unlabelled
    mixed, only = split_train(tmp, unlabelled)
    layers = tuple(int(i) for i in args.layers.split(","))
    common = dict(layers=layers, max_steps=args.steps, batch_size=args.batch, max_length=64,
                  learning_rate=args.lr, save_steps=10**6, logging_steps=10,
                  cache_teacher=args.cache_teacher)
    runs: dict[str, list[dict]] = {"distilled": [], "labels only": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, train, extra in (("distilled", mixed, {}),
                                   ("labels only", only, {"kl_weight": 0.0})):
            config = DistillConfig(**common, seed=seed, **extra,
                                   checkpoint_dir=str(tmp / "ckpt"))
            notes = run_stage(config, train, tmp / "out")
            notes["seed"] = seed
            runs[name].append(notes)
            print(f"  {name} seed {seed}: dev acc {notes['accuracy_student']:.4f}, agreement "
                  f"{notes['label_agreement']:.4f}, {notes['wall_s']:.0f} s", file=sys.stderr)
            _save("teacher_value", {"config": {**common, "unlabelled_rows": unlabelled,
                                               "labelled_rows": LABELLED}, "runs": runs})
    print(_table(runs))


def _table(runs: dict[str, list[dict]]) -> str:
    lines = ["| student (3 layers) | dev accuracy per seed | mean | spread (max-min) | "
             "agreement with teacher (mean) | wall s per run (median) |", "|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        acc = [r["accuracy_student"] for r in rs]
        agree = [r["label_agreement"] for r in rs]
        lines.append(f"| {name} | {', '.join(f'{a:.4f}' for a in acc)} | {statistics.mean(acc):.4f} | "
                     f"{max(acc) - min(acc):.4f} | {statistics.mean(agree):.4f} | "
                     f"{statistics.median(r['wall_s'] for r in rs):.0f} |")
    return "\n".join(lines)


def full(args, tmp: Path) -> None:
    from edgeopt.recipe_prepare import DistillConfig

    layers = tuple(int(i) for i in args.layers.split(","))
    config = DistillConfig(layers=layers, max_steps=args.steps, max_minutes=args.minutes,
                           batch_size=args.batch, max_length=64, learning_rate=args.lr,
                           max_rows=args.rows, save_steps=10**6, logging_steps=100,
                           checkpoint_dir=str(tmp / "ckpt"))
    notes = run_stage(config, TRAIN, tmp / "out")
    print(json.dumps(notes, indent=1, default=str))
    _save(f"full_{args.layers}", {"config": {**config.__dict__}, "notes": notes})


def layer_choice(args, tmp: Path) -> None:
    from edgeopt.recipe_prepare import DistillConfig

    for layers in ((0, 2, 4), (1, 3, 5)):
        config = DistillConfig(layers=layers, max_steps=args.steps, batch_size=args.batch,
                               max_length=64, learning_rate=args.lr, max_rows=args.steps * args.batch,
                               save_steps=10**6, logging_steps=100, checkpoint_dir=str(tmp / "ckpt"))
        notes = run_stage(config, TRAIN, tmp / "out")
        print(f"  layers {layers}: dev acc {notes['accuracy_student']:.4f} agreement "
              f"{notes['label_agreement']:.4f} {notes['wall_s']:.0f} s", file=sys.stderr)
        _save(f"layers_{'-'.join(map(str, layers))}_{args.steps}", notes)


def chain(args, tmp: Path) -> None:
    import subprocess

    import edgeopt

    student = Path(args.reuse or args.keep or tmp / "student")
    result: dict = {"command": " ".join(sys.argv), "recipe": args.recipe}
    if not args.reuse:
        cmd = [sys.executable, "-m", "edgeopt", "compile", str(TEACHER), "--recipe", args.recipe,
               "--train-data", str(TRAIN), "--eval-data", str(DEV), "-o", str(student)]
        print("  " + " ".join(cmd), file=sys.stderr)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        result["compile_wall_s"] = round(time.perf_counter() - start, 1)
    report = json.loads((student / "report.json").read_text())
    result["student_report"] = {"status": report["status"], "parity": report["parity"]["metrics"],
                                "passes": [{k: p.get(k) for k in ("name", "seconds", "notes")}
                                           for p in report["passes"]]}
    teacher_bundle = tmp / "teacher-arm64-int8"
    start = time.perf_counter()
    edgeopt.compile(str(TEACHER), target="arm64-int8", out=teacher_bundle, eval_data=str(DEV),
                    calibration_data=str(TRAIN), fail_on_parity=False)
    result["teacher_compile_wall_s"] = round(time.perf_counter() - start, 1)
    bundles = {"teacher arm64-int8": teacher_bundle, "student (recipe)": student}
    result |= side_by_side(bundles, args.threads, args.warmup, args.repeats)
    _save("chain", result)
    print(json.dumps({k: v for k, v in result.items() if k != "student_report"}, indent=1))


def side_by_side(bundles: dict[str, Path], threads: int, warmup: int, repeats: int) -> dict:
    """Size, dev accuracy, agreement with the teacher and p50 latency of each bundle, and of
    the teacher in PyTorch eager, timed round-robin in one process."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgeopt.bench import time_side_by_side
    from edgeopt.bundle import read_manifest
    from edgeopt.evaldata import builtin_sentences, load_eval_data
    from edgeopt.runtime import make_session, run_one
    from edgeopt.tasks import fixed_length_feeds
    from edgeopt.verify.feeds import encoder_batches

    torch.set_num_threads(threads)
    dev = load_eval_data(DEV, None)
    labels = np.asarray(dev.labels)
    tok = AutoTokenizer.from_pretrained(str(TEACHER))
    model = AutoModelForSequenceClassification.from_pretrained(str(TEACHER)).eval()
    with torch.inference_mode():
        teacher = np.concatenate([model(**tok(list(dev.texts[i:i + 32]), padding=True, truncation=True,
                                              max_length=128, return_tensors="pt")).logits.numpy()
                                  for i in range(0, len(dev.texts), 32)]).argmax(-1)
    text = " ".join(builtin_sentences().texts[:4])
    rows = {"pytorch-eager-fp32 (teacher)": {
        "dev_accuracy": float((teacher == labels).mean()), "agreement_with_teacher": 1.0,
        "parameters": sum(p.numel() for p in model.parameters())}}
    feeds = fixed_length_feeds(tok, text, 128, 1, ["input_ids", "attention_mask", "token_type_ids"])
    args = [torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids")]

    def eager():
        with torch.inference_mode():
            return model(*args)

    variants = {"pytorch-eager-fp32 (teacher)": eager}
    for name, bundle in bundles.items():
        manifest = read_manifest(bundle)
        disabled = tuple(manifest.get("session_options", {}).get("disabled_optimizers", ()))
        session = make_session(bundle / "model.onnx", threads=threads, disabled_optimizers=disabled)
        batches = encoder_batches(bundle, manifest, dev)
        pred = batches.assemble([session.run([batches.output], f)[0] for f in batches.runs]).argmax(-1)
        names = [i["name"] for i in manifest["inputs"]]
        own = AutoTokenizer.from_pretrained(str(bundle))
        bundle_feeds = fixed_length_feeds(own, text, 128, 1, names)
        variants[name] = lambda s=session, f=bundle_feeds: run_one(s, f)
        rows[name] = {"dev_accuracy": float((pred == labels).mean()),
                      "agreement_with_teacher": float((pred == teacher).mean()),
                      "model_onnx_mb": (bundle / "model.onnx").stat().st_size / 1e6,
                      "bundle_mb": sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 1e6}
    stats = time_side_by_side(variants, warmup, repeats)
    for name, st in stats.items():
        q1, q3 = np.percentile(st.samples_ms, [25, 75])
        rows[name] |= {"p50_ms": st.p50_ms, "iqr_ms": float(q3 - q1), "p90_ms": st.p90_ms}
    base = rows["teacher arm64-int8"]["p50_ms"]
    for row in rows.values():
        row["x_teacher_arm64_int8"] = row["p50_ms"] / base
    for name, row in rows.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in row.items()), file=sys.stderr)
    return {"variants": rows, "threads": threads, "warmup": warmup, "repeats": repeats,
            "seq_len": 128, "batch": 1, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("teacher-value", "full", "layers", "chain"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--layers", default="1,3,5")
    parser.add_argument("--unlabelled", type=int, default=0,
                        help="unlabelled rows beside the 8,000 (0: all the rest of train.tsv)")
    parser.add_argument("--cache-teacher", action=argparse.BooleanOptionalAction, default=True,
                        help="teacher outputs once per row (off: live, only for the rows read)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "minilm-sst2-mobile.yaml"))
    parser.add_argument("--reuse", default=None, help="chain: a bundle the recipe already made")
    parser.add_argument("--keep", default=None,
                        help="chain: write the student bundle here (and its checkpoints beside it)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not TEACHER.is_dir():
        sys.exit(f"needs {TEACHER} and {TRAIN}")
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        {"teacher-value": teacher_value, "full": full, "layers": layer_choice,
         "chain": chain}[args.what](args, Path(tmp))


if __name__ == "__main__":
    main()
