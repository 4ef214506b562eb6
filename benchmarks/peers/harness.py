"""Run the variants side by side: every worker loaded at once, timed round-robin, then
each one's peak RSS and its teacher-forced scores on the same windows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers.client import Worker
from peers.variants import Variant


@dataclass(frozen=True)
class BenchPlan:
    """The same tokens for every variant: greedy runs on ``prompts``, scoring on ``windows``.

    Each of ``warmup`` and ``repeats`` is one greedy run of ``new_tokens`` per variant;
    run ``i`` uses ``prompts[i % len(prompts)]``.
    """

    prompts: tuple[tuple[int, ...], ...]
    windows: tuple[tuple[int, ...], ...]
    new_tokens: int
    warmup: int
    repeats: int

    def __post_init__(self) -> None:
        if not self.prompts or not self.windows:
            raise ValueError("the plan needs at least one prompt and one scoring window")
        if self.new_tokens < 2:
            raise ValueError("new_tokens must be >= 2: decode is timed after the first token")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError("warmup must be >= 0 and repeats >= 1")
        if min(len(w) for w in self.windows) < 2:
            raise ValueError("every scoring window needs at least 2 tokens")


def run(variants: Sequence[Variant], plan: BenchPlan, log_dir: Path,
        log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Raw figures per variant name: load info, per-run timings and tokens, RSS, scores."""
    raw: dict[str, dict[str, Any]] = {v.name: {"runtime": v.runtime, "runs": []} for v in variants}
    with ExitStack() as stack:
        workers: dict[str, Worker] = {}
        for v in variants:
            workers[v.name] = stack.enter_context(v.start(log_dir))
            raw[v.name]["load"] = workers[v.name].request("load", **v.load)
            log(f"loaded {v.name}: {raw[v.name]['load'].get('runtime')}")
        names = list(workers)
        for i in range(plan.warmup):
            for name in names:
                _generate(workers[name], plan, i)
        for i in range(plan.repeats):
            # Rotate who goes first, so no variant always runs right after the same one.
            for name in names[i % len(names):] + names[:i % len(names)]:
                run_ = _generate(workers[name], plan, i) | {"prompt": i % len(plan.prompts)}
                raw[name]["runs"].append(run_)
        log(f"timed {plan.repeats} runs per variant after {plan.warmup} warm-up runs")
        for name in names:
            # Before scoring: the peak is the model loaded plus greedy decoding, not the
            # logits of a whole scoring window.
            raw[name]["memory"] = workers[name].request("rss")
        for name in names:
            raw[name]["scores"] = workers[name].request("score", windows=[list(w) for w in plan.windows])
            log(f"scored {name} on {len(plan.windows)} windows")
    return raw


def _generate(worker: Worker, plan: BenchPlan, i: int) -> dict[str, Any]:
    reply = worker.request("generate", prompt=list(plan.prompts[i % len(plan.prompts)]),
                           new_tokens=plan.new_tokens)
    return {k: reply[k] for k in ("tokens", "prefill_s", "decode_s", "decode_steps")}
