"""The bundle contract read by a second runtime: onnxruntime-node, driven only by the
manifest (examples/node/run_bundle.js), gives the labels and embeddings onnxruntime's
Python API gives, on real weights and every SST-2 dev row."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, fast_recipe, shared_path

import edgeopt

NODE_DIR = REPO / "examples" / "node"
RUNNER = NODE_DIR / "run_bundle.js"
EMBEDDING_ROWS = 64  # a sample: each row's vector is compared element by element
# Rows per run, padded to the longest, on both sides: the same batches, so the same
# dynamic-quantization scales (one per batch tensor) in both runtimes.
BATCH = 32

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs; .ci/run does)")
    for pkg in ("onnxruntime-node", "@huggingface/tokenizers"):
        if not (NODE_DIR / "node_modules" / pkg / "package.json").is_file():
            pytest.skip(f"{pkg} is not installed in examples/node (cd examples/node && "
                        "ONNXRUNTIME_NODE_INSTALL=skip npm ci; .ci/run does)")
    return node


@pytest.fixture(scope="module")
def sst2_texts() -> list[str]:
    from edgeopt.evaldata import load_eval_data

    return list(load_eval_data(shared_path("data/sst2/dev.tsv"), ("negative", "positive")).texts)


@pytest.fixture(scope="module")
def contract_bundles(minilm_embedder, tmp_path_factory) -> dict[str, Path]:
    """MiniLM-SST2 and all-MiniLM-L6-v2 compiled for arm64-int8 (validated on 16 rows: the
    test's own comparison covers the rest)."""
    dev = shared_path("data/sst2/dev.tsv")
    root = tmp_path_factory.mktemp("node-contract")
    out = {"sst2": root / "sst2", "embedder": root / "embedder"}
    for name, model in (("sst2", shared_path("models/minilm-sst2")), ("embedder", minilm_embedder)):
        edgeopt.compile(str(model), recipe=fast_recipe("arm64-int8"), out=out[name],
                        eval_data=str(dev), max_eval_rows=16)
    return out


def _run_node(bundle: Path, texts: list[str], tmp: Path) -> list[dict]:
    rows, out = tmp / f"{bundle.name}-rows.jsonl", tmp / f"{bundle.name}-out.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    proc = subprocess.run([_node(), str(RUNNER), str(bundle), str(rows), str(out), "--ids",
                           "--batch", str(BATCH)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _python_run(bundle: Path, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids (transformers) and the first output (onnxruntime Python) of each text, in
    the node runner's batches, the session opened as the manifest says."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    manifest = json.loads((bundle / "manifest.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(bundle))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / manifest["model"]), opts,
                                providers=["CPUExecutionProvider"],
                                disabled_optimizers=manifest["session_options"]["disabled_optimizers"])
    names = {i["name"] for i in manifest["inputs"]}
    ids, outs = [], []
    for start in range(0, len(texts), BATCH):
        enc = tok(texts[start:start + BATCH], truncation=True, padding=True,
                  max_length=manifest["max_sequence_length"], return_tensors="np")
        ids += [row[m == 1].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
        outs += list(sess.run(None, feeds)[0])
    return ids, outs


def test_node_labels_equal_python_on_every_sst2_dev_row(contract_bundles, sst2_texts, tmp_path):
    bundle = contract_bundles["sst2"]
    node = _run_node(bundle, sst2_texts, tmp_path)
    ids, logits = _python_run(bundle, sst2_texts)
    labels = json.loads((bundle / "manifest.json").read_text())["label_names"]
    assert len(node) == len(sst2_texts) == 872
    assert [r["ids"] for r in node] == ids  # the JS tokenizer on the bundle's tokenizer.json
    assert [r["label"] for r in node] == [labels[int(np.argmax(x))] for x in logits]
    worst = max(float(np.abs(np.array(r["logits"]) - x).max()) for r, x in zip(node, logits, strict=True))
    print(f"node == python labels on {len(node)} rows; largest logit difference {worst:.2e}")
    assert worst < 1e-3, worst


def test_node_embeddings_match_python(contract_bundles, sst2_texts, tmp_path):
    bundle = contract_bundles["embedder"]
    texts = sst2_texts[:: len(sst2_texts) // EMBEDDING_ROWS][:EMBEDDING_ROWS]
    node = _run_node(bundle, texts, tmp_path)
    ids, vectors = _python_run(bundle, texts)
    assert [r["ids"] for r in node] == ids
    cos = [float(np.dot(r["embedding"], v) / (np.linalg.norm(r["embedding"]) * np.linalg.norm(v)))
           for r, v in zip(node, vectors, strict=True)]
    diff = max(float(np.abs(np.array(r["embedding"]) - v).max()) for r, v in zip(node, vectors, strict=True))
    print(f"node vs python embeddings on {len(cos)} rows: lowest cosine {min(cos):.9f}, "
          f"largest element difference {diff:.2e}")
    assert len(cos) == EMBEDDING_ROWS and min(cos) >= 0.9999, min(cos)


def test_node_refuses_a_tampered_bundle(contract_bundles, tmp_path):
    bundle = tmp_path / "tampered"
    shutil.copytree(contract_bundles["sst2"], bundle)
    with (bundle / "tokenizer_config.json").open("a") as f:
        f.write(" ")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "fine"}\n')
    proc = subprocess.run([_node(), str(RUNNER), str(bundle), str(rows), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "tokenizer_config.json does not match its sha256" in proc.stderr
