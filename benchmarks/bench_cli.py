"""`edgeopt bench` checked against itself and a bare loop, and its grid on real bundles.

    python benchmarks/bench_cli.py --bundles DIR [--out benchmarks/results/bench-cli.json]
                                   [--warmup 5 --repeats 30 --rounds 5] [--targets A,B]
                                   [--skip-checks]

DIR holds bundles of ../shared/models/minilm-sst2 named after their targets (x86-fp32,
arm64-int8, arm64-int4), compiled with `edgeopt compile`. Three measurements:

1. overhead: the bench's p50 at batch 1 against a bare ``session.run`` loop on a session
   with the same SessionOptions, the two alternating in ``--rounds`` rounds in this
   process (each round: one bench grid point, then the bare loop, same warm-up/repeats);
2. repeatability: the whole x86-fp32 grid run twice, point by point;
3. the grid (threads 1,2 x batch 1,8 x seq 32,128) for every bundle, with cold start,
   peak memory and PyTorch eager.
Prints Markdown for benchmarks/RESULTS.md and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's edgeopt

from edgeopt.benchgrid import GridSpec, bench_bundle  # noqa: E402
from edgeopt.benchgrid.inputs import BenchBundle, FeedMaker  # noqa: E402

TARGETS = ("x86-fp32", "arm64-int8", "arm64-int4")


def bare_p50_ms(bundle: BenchBundle, threads: int, batch: int, seq: int, warmup: int,
                repeats: int) -> float:
    """The reference: onnxruntime with the same options, timed by hand, nothing around it."""
    import onnxruntime as ort

    from edgeopt.providers.base import SessionConfig
    from edgeopt.providers.session import session_options

    options = session_options(SessionConfig(threads=threads))
    session = ort.InferenceSession(str(bundle.model), sess_options=options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(bundle.disabled_optimizers) or None)
    feeds = FeedMaker(bundle)(batch, seq)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def overhead(path: Path, args: argparse.Namespace) -> dict:
    bundle = BenchBundle.open(path)
    spec = GridSpec(threads=(2,), batches=(1,), sequences=(128,), warmup=args.warmup,
                    repeats=args.repeats, cold_start=False, eager=False)
    rounds = []
    for i in range(args.rounds):
        bench = bench_bundle(path, spec).points[0].latency_ms.p50
        bare = bare_p50_ms(bundle, 2, 1, 128, args.warmup, args.repeats)
        rounds.append({"bench_p50_ms": bench, "bare_p50_ms": bare})
        print(f"  round {i}: bench {bench:.3f} ms, bare {bare:.3f} ms", file=sys.stderr)
    bench_med = statistics.median(r["bench_p50_ms"] for r in rounds)
    bare_med = statistics.median(r["bare_p50_ms"] for r in rounds)
    return {"rounds": rounds, "bench_median_p50_ms": bench_med, "bare_median_p50_ms": bare_med,
            "ratio": bench_med / bare_med}


def grid(path: Path, args: argparse.Namespace) -> dict:
    spec = GridSpec(threads=(1, 2), batches=(1, 8), sequences=(32, 128), warmup=args.warmup,
                    repeats=args.repeats)
    return bench_bundle(path, spec, log=lambda m: print(f"  {path.name}: {m}", file=sys.stderr)
                        ).to_dict()


def p50s(result: dict) -> dict[tuple, float]:
    return {(p["threads"], p["batch"], p["seq"]): p["latency_ms"]["p50"] for p in result["points"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench-cli.json")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="bundles under --bundles to run the grid on")
    parser.add_argument("--skip-checks", action="store_true",
                        help="only the grids (no overhead and repeatability runs)")
    args = parser.parse_args()

    out: dict = {"warmup": args.warmup, "repeats": args.repeats,
                 "load_average_start": list(os.getloadavg())}
    if not args.skip_checks:
        print("overhead: bench vs bare session.run at batch 1, seq 128, 2 threads", file=sys.stderr)
        out["overhead"] = overhead(args.bundles / "x86-fp32", args)
    grids = {}
    for target in args.targets.split(","):
        grids[target] = grid(args.bundles / target, args)
    if not args.skip_checks:
        print("repeatability: the x86-fp32 grid again", file=sys.stderr)
        rerun = grid(args.bundles / "x86-fp32", args)
        first, second = p50s(grids["x86-fp32"]), p50s(rerun)
        diffs = {k: abs(second[k] - first[k]) / first[k] for k in first}
        out["repeatability"] = {"rerun": rerun, "max_rel_diff_p50": max(diffs.values()),
                                "median_rel_diff_p50": statistics.median(diffs.values()),
                                "per_point": {"x".join(map(str, k)): v for k, v in diffs.items()}}
    out["grids"] = grids
    out["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")

    if not args.skip_checks:
        o, r = out["overhead"], out["repeatability"]
        print(f"overhead: bench p50 {o['bench_median_p50_ms']:.3f} ms vs bare "
              f"{o['bare_median_p50_ms']:.3f} ms (median of {args.rounds} alternating rounds): "
              f"ratio {o['ratio']:.4f}")
        print(f"repeatability (x86-fp32 grid twice): p50 differs by at most "
              f"{r['max_rel_diff_p50']:.1%}, median {r['median_rel_diff_p50']:.1%}")
    from edgeopt.benchgrid.result import GridPoint, GridResult
    from edgeopt.stats import Summary

    for target, g in grids.items():
        points = [GridPoint(**{k: v for k, v in p.items() if k in GridPoint.__dataclass_fields__}
                            | {"latency_ms": p["latency_ms"] and Summary(**p["latency_ms"]),
                               "eager_ms": p["eager_ms"] and Summary(**p["eager_ms"])})
                  for p in g["points"]]
        fields = {k: v for k, v in g.items() if k != "points"}
        print(f"\n### {target}\n\n{GridResult(**fields, points=points).to_markdown()}")


if __name__ == "__main__":
    main()
