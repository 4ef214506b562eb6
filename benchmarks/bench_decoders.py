"""Decoder benchmark: compile SmolLM2-135M per target and collect perplexity, agreement,
size, prefill/decode throughput and peak memory. Each compile times the bundle, the fp32
ONNX graph and PyTorch eager fp32 side by side in one run (see edgeopt/decoder/bench.py).

    python benchmarks/bench_decoders.py [--targets arm64-int4,x86-int8,benchmarks/recipes/X.yaml]
                                        [--out benchmarks/results/decoders.json]

Targets are target names or recipe files; benchmarks/recipes/ holds bit layouts that
trade agreement for decode speed (benchmarks/RESULTS.md, session 6).

Needs ../shared/data/wikitext-2-raw/wiki.test.raw and the PyPI SmolLM2 (fetched once).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_encoders import machine  # noqa: E402


def run(model: str, spec: str, text: Path, tmp: Path) -> dict:
    import edgeopt
    from edgeopt.errors import ParityError

    is_file = spec.endswith((".yaml", ".yml"))
    out = tmp / Path(spec).stem
    start = time.perf_counter()
    try:
        report = edgeopt.compile(model, out=out, eval_data=text,
                                 **({"recipe": spec} if is_file else {"target": spec}))
    except ParityError as err:
        report = err.report
    wall = time.perf_counter() - start
    r = report.to_dict()
    sizes = r["sizes"]
    row = {"target": r["target"], "status": r["status"], "wall_s": wall, "metrics": r["parity"]["metrics"],
           "failures": r["failures"], "size_bytes": sizes["bundle model.onnx"],
           "size_ratio_vs_fp32_onnx": sizes["bundle model.onnx"] / sizes["onnx fp32"],
           "throughput": r["bench"]["throughput"], "quantize_notes": next(
               (p["notes"] for p in r["passes"] if p["name"] == "quantize"), {})}
    print(f"  {spec}: {row['status']} in {wall:.0f} s, size x{row['size_ratio_vs_fp32_onnx']:.3f}, "
          + ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items() if isinstance(v, float)),
          file=sys.stderr)
    return row


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}.", "",
             "| target | status | size vs fp32 ONNX | ppl ratio | token agreement | first divergence "
             "(mean) | decode tok/s bundle | fp32 ONNX | PyTorch eager | prefill tok/s bundle | "
             "peak RSS MB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        m, t = row["metrics"], row["throughput"]
        subject = next(k for k in t if k.startswith("edgeopt "))
        eager = next((k for k in t if k.startswith("pytorch")), None)
        lines.append(
            f"| {row['target']} | {row['status']} | {row['size_ratio_vs_fp32_onnx']:.3f} | "
            f"{m.get('perplexity_ratio', float('nan')):.3f} | {m.get('token_agreement', float('nan')):.3f} | "
            f"{m.get('first_divergence_mean', float('nan')):.1f} | "
            f"{t[subject]['decode_tokens_per_s']:.1f} | "
            f"{t.get('onnx-fp32', {}).get('decode_tokens_per_s') or float('nan'):.1f} | "
            f"{(t[eager]['decode_tokens_per_s'] if eager else float('nan')):.1f} | "
            f"{t[subject]['prefill_tokens_per_s']:.0f} | {t[subject]['peak_rss_mb'] or float('nan'):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="arm64-int4,x86-int8",
                        help="target names or recipe YAML files, comma-separated")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decoders.json"))
    args = parser.parse_args()

    from edgeopt import zoo

    text = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"
    if not text.is_file():
        sys.exit("needs ../shared/data/wikitext-2-raw/wiki.test.raw")
    model = str(zoo.fetch("smollm2"))
    result = {"machine": machine(), "command": " ".join(sys.argv), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.targets.split(","):
            result["rows"].append(run(model, spec, text, Path(tmp)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
