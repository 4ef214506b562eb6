"""What a decode step's weight products cost as MatMulNBits, by block size and by merging
(issue 19, item 1): is onnxruntime-genai's block 32, or its separate gate and up
projections, why its graph decodes faster?

    python benchmarks/bench_matmulnbits.py [--repeats 15] [--out benchmarks/results/matmulnbits.json]

Each variant is one graph of SmolLM2-135M's projection chain for a single token (30
layers of q/k/v merged, o, gate and up merged or separate, down; then the 49,152-row LM
head), every product a 4-bit MatMulNBits with the variant's block size, batch 1, 2
threads. Weight codes and scales are random: the kernels' time does not depend on the
values, only on the shapes, the block size and the accuracy level. Every session is built
first, warmed up, then timed round-robin (--repeats rounds of --steps runs each), so the
machine's drift falls on every variant alike. Prints and writes the median and IQR of the
time per step in ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402

# SmolLM2-135M: hidden 576, MLP 1536, 30 layers, 3 KV heads of 64, vocabulary 49,152.
HIDDEN, MLP, LAYERS, KV, VOCAB = 576, 1536, 30, 192, 49152


@dataclass(frozen=True)
class Variant:
    block: int
    merged_gate_up: bool
    accuracy_level: int = 4

    @property
    def name(self) -> str:
        gate_up = "gate+up merged" if self.merged_gate_up else "gate, up separate"
        return f"block {self.block}, {gate_up}, accuracy level {self.accuracy_level}"


VARIANTS = (Variant(32, False), Variant(32, True), Variant(64, False), Variant(64, True),
            Variant(128, False), Variant(128, True), Variant(64, True, accuracy_level=0))


class _Graph:
    """A projection chain under construction: nodes and random 4-bit initializers."""

    def __init__(self, variant: Variant, rng: np.random.Generator) -> None:
        self.variant, self.rng = variant, rng
        self.nodes: list = []
        self.initializers: list = []

    def product(self, name: str, x: str, k: int, n: int) -> str:
        from onnx import helper, numpy_helper

        block = self.variant.block
        blocks = -(-k // block)
        codes = self.rng.integers(0, 256, size=(n, blocks, block // 2), dtype=np.uint8)
        scales = self.rng.random(n * blocks, dtype=np.float32) * 0.01 + 1e-3
        self.initializers += [numpy_helper.from_array(codes, f"{name}.codes"),
                              numpy_helper.from_array(scales, f"{name}.scales")]
        self.nodes.append(helper.make_node(
            "MatMulNBits", [x, f"{name}.codes", f"{name}.scales"], [name], name=name,
            domain="com.microsoft", K=k, N=n, bits=4, block_size=block,
            accuracy_level=self.variant.accuracy_level))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))


def build(variant: Variant, seed: int = 0) -> bytes:
    """The serialized one-token projection chain of ``variant``."""
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(variant, np.random.default_rng(seed))
    x = "x"
    for layer in range(LAYERS):
        p = f"l{layer}"
        qkv = g.product(f"{p}.qkv", x, HIDDEN, HIDDEN + 2 * KV)
        g.op("Slice", [qkv, "zero", "hidden", "last"], [f"{p}.q"])  # q's width feeds o
        o = g.product(f"{p}.o", f"{p}.q", HIDDEN, HIDDEN)
        if variant.merged_gate_up:
            gate_up = g.product(f"{p}.gate_up", o, HIDDEN, 2 * MLP)
            g.op("Split", [gate_up], [f"{p}.gate", f"{p}.up"], axis=-1, num_outputs=2)
            gate, up = f"{p}.gate", f"{p}.up"
        else:
            gate, up = g.product(f"{p}.gate", o, HIDDEN, MLP), g.product(f"{p}.up", o, HIDDEN, MLP)
        g.op("Mul", [gate, up], [f"{p}.act"])
        x = g.product(f"{p}.down", f"{p}.act", MLP, HIDDEN)
    logits = g.product("lm_head", x, HIDDEN, VOCAB)
    g.initializers += [numpy_helper.from_array(np.array([v], np.int64), n)
                       for n, v in (("zero", 0), ("hidden", HIDDEN), ("last", -1))]
    graph = helper.make_graph(g.nodes, "projections",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, HIDDEN])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)],
                              g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def weight_mb(variant: Variant) -> float:
    """Bytes of codes and fp32 scales one step reads, in MB."""
    def product(k: int, n: int) -> int:
        blocks = -(-k // variant.block)
        return n * blocks * (variant.block // 2 + 4)

    layer = product(HIDDEN, HIDDEN + 2 * KV) + product(HIDDEN, HIDDEN) + 2 * product(HIDDEN, MLP) \
        + product(MLP, HIDDEN)
    return (LAYERS * layer + product(HIDDEN, VOCAB)) / 1e6


def time_variants(variants: tuple[Variant, ...], threads: int, warmup: int, repeats: int,
                  steps: int) -> dict[Variant, list[float]]:
    """ms per step of each variant: ``repeats`` round-robin rounds of ``steps`` runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    sessions = {v: ort.InferenceSession(build(v), options, providers=["CPUExecutionProvider"])
                for v in variants}
    x = np.random.default_rng(1).standard_normal((1, 1, HIDDEN), dtype=np.float32)
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, {"x": x})
    times: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant, session in sessions.items():
            start = time.perf_counter()
            for _ in range(steps):
                session.run(None, {"x": x})
            times[variant].append((time.perf_counter() - start) / steps * 1e3)
    return times


def summarize(times: dict[Variant, list[float]]) -> list[dict]:
    rows = []
    for variant, ms in times.items():
        q1, median, q3 = np.percentile(ms, [25, 50, 75])
        rows.append({"variant": variant.name, "block": variant.block,
                     "merged_gate_up": variant.merged_gate_up,
                     "accuracy_level": variant.accuracy_level,
                     "weight_mb": round(weight_mb(variant), 1), "median_ms": round(float(median), 3),
                     "iqr_ms": round(float(q3 - q1), 3), "runs_ms": [round(t, 3) for t in ms]})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=20, help="runs per variant before timing")
    p.add_argument("--repeats", type=int, default=15, help="timed round-robin rounds")
    p.add_argument("--steps", type=int, default=20, help="runs per variant per round")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "matmulnbits.json")
    args = p.parse_args(argv)
    rows = summarize(time_variants(VARIANTS, args.threads, args.warmup, args.repeats, args.steps))
    for row in rows:
        print(f"{row['variant']:48s} {row['weight_mb']:6.1f} MB  {row['median_ms']:.3f} ms "
              f"(IQR {row['iqr_ms']:.3f})")
    result = {"machine": machine(), "threads": args.threads, "warmup": args.warmup,
              "repeats": args.repeats, "steps": args.steps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
