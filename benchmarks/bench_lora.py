"""LoRA benchmark: train a LoRA adapter on the fine-tuned MiniLM, compile the adapter
folder, and judge the bundle against the merged model in PyTorch (issue 15).

    python benchmarks/bench_lora.py [--target arm64-int8] [--steps 200] [--first-row 40000]
                                    [--keep DIR] [--out benchmarks/results/lora.json]

Training (seeded, CPU): SEQ_CLS LoRA, r 8, alpha 16, dropout 0.05 on query/value (the
classifier head trained too, as peft's modules_to_save), AdamW lr 5e-4, batch 32, max
length 64, ``--steps`` steps over SST-2 train rows ``--first-row`` onwards (data rows
counted from 0 after the header), in file order. The adapter is then compiled as a user
would: ``edgeopt.compile(adapter, target=..., eval_data=dev.tsv)`` on all 872 dev rows,
the base found through the adapter's ``base_model_name_or_path``.

Needs ../shared (minilm-sst2, SST-2) and peft (``pip install 'edgeopt[lora]'``). Prints
the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BASE = SHARED / "models" / "minilm-sst2"
TRAIN = SHARED / "data" / "sst2" / "train.tsv"
DEV = SHARED / "data" / "sst2" / "dev.tsv"
BATCH, MAX_LENGTH, LR, SEED = 32, 64, 5e-4, 0
EVAL_MAX_LENGTH = 128  # what the compile's validation tokenizes to


def read_tsv(path: Path) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row["sentence"], int(row["label"])) for row in reader]


def predictions(model, tokenizer, texts: list[str]) -> list[int]:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i:i + 64], padding=True, truncation=True,
                            max_length=EVAL_MAX_LENGTH, return_tensors="pt")
            out += model(**enc).logits.argmax(-1).tolist()
    return out


def accuracy(pred: list[int], labels: list[int]) -> float:
    return sum(p == y for p, y in zip(pred, labels, strict=True)) / len(labels)


def train_adapter(rows: list[tuple[str, int]], steps: int, out: Path) -> dict:
    """Train the LoRA, save it to ``out``; returns the training record and dev accuracies."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForSequenceClassification.from_pretrained(BASE.resolve()).eval()
    dev = read_tsv(DEV)
    dev_texts, dev_labels = [t for t, _ in dev], [y for _, y in dev]
    base_acc = accuracy(predictions(model, tokenizer, dev_texts), dev_labels)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16,
                                             lora_dropout=0.05, target_modules=["query", "value"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        batch = rows[step * BATCH:(step + 1) * BATCH]
        enc = tokenizer([t for t, _ in batch], padding=True, truncation=True,
                        max_length=MAX_LENGTH, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}/{steps}: mean loss {sum(losses[-50:]) / 50:.4f}", file=sys.stderr)
    train_s = time.perf_counter() - start
    model.eval()
    peft_acc = accuracy(predictions(model, tokenizer, dev_texts), dev_labels)
    model.save_pretrained(out)
    return {"train_seconds": round(train_s, 1), "final_loss_mean_last_50": sum(losses[-50:]) / 50,
            "dev_accuracy_base_pytorch": base_acc, "dev_accuracy_peft_unmerged_pytorch": peft_acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="arm64-int8")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--first-row", type=int, default=40000,
                    help="first SST-2 train data row (0-based, after the header) to train on")
    ap.add_argument("--keep", type=Path, help="keep the adapter and bundle under this folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "lora.json")
    args = ap.parse_args()
    for path in (BASE, TRAIN, DEV):
        if not path.exists():
            sys.exit(f"needs {path} (../shared)")

    from bench_encoders import machine

    import edgeopt

    train = read_tsv(TRAIN)
    rows = train[args.first_row:args.first_row + args.steps * BATCH]
    if len(rows) < args.steps * BATCH:
        sys.exit(f"only {len(rows)} train rows from row {args.first_row}; lower --first-row or --steps")
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as tmp:
        root = args.keep or Path(tmp)
        adapter, bundle = root / "minilm-sst2-lora", root / f"minilm-sst2-lora-{args.target}"
        print(f"training LoRA on train rows {args.first_row}-{args.first_row + len(rows) - 1}",
              file=sys.stderr)
        training = train_adapter(rows, args.steps, adapter)
        start = time.perf_counter()
        report = edgeopt.compile(adapter, target=args.target, out=bundle, eval_data=DEV,
                                 fail_on_parity=False, force=args.keep is not None)
        compile_s = time.perf_counter() - start
        m = report.parity["metrics"]
        result = {
            "command": f"python benchmarks/bench_lora.py --target {args.target} --steps {args.steps} "
                       f"--first-row {args.first_row}",
            "compile_call": f"edgeopt.compile(ADAPTER, target={args.target!r}, eval_data='dev.tsv')"
                            f"  # = edgeopt compile ADAPTER -t {args.target} -o OUT --eval-data dev.tsv",
            "machine": machine(),
            "training": {"rows": f"SST-2 train data rows {args.first_row}-{args.first_row + len(rows) - 1}"
                                 " (0-based after the header), file order",
                         "steps": args.steps, "batch": BATCH, "max_length": MAX_LENGTH, "lr": LR,
                         "seed": SEED, "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                         "target_modules": ["query", "value"], **training},
            "status": report.status,
            "failures": report.failures,
            "dev_rows": report.parity["rows"],
            "merged_pytorch_accuracy": m.get("accuracy_reference"),
            "bundle_accuracy": m.get("accuracy"),
            "label_agreement_with_merged": m.get("label_agreement"),
            "bundle_model_mb": report.sizes["bundle model.onnx"] / 1e6,
            "base_weights_mb": report.sizes["source weights"] / 1e6,
            "compile_seconds": round(compile_s, 1),
            "source": report.source,
            "speedup_p50_vs_pytorch": (report.bench or {}).get("speedup_p50"),
        }
    print(json.dumps({k: v for k, v in result.items() if k != "source"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
