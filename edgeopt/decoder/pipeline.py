"""The decoder compile, top to bottom: load, export (with KV cache), quantize, validate,
benchmark, bundle. Mirrors :func:`edgeopt.pipeline.compile_encoder` and reuses its report
and bundle helpers; what differs is the graph (a cache in and out), the parity metrics
(perplexity and greedy agreement on plain text) and the benchmark (tokens per second).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.artifact import Journal, OnnxArtifact, PassRecord
from edgeopt.decoder.bench import BenchTokens, bench_decoder
from edgeopt.decoder.evaltext import calibration_feeds, prompts_from_text, read_text, text_tokens
from edgeopt.decoder.export import MIN_OPSET, export_decoder
from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.io import DecoderIO
from edgeopt.decoder.reference import TorchCausalLM
from edgeopt.decoder.untie import untie_lm_head
from edgeopt.decoder.validate import DecoderEvalConfig, validate_decoder
from edgeopt.passes.quantize import QuantContext, quantize
from edgeopt.pipeline import CompileRequest, _write_bundle, build_report
from edgeopt.recipe import NoQuantConfig, QuantConfig
from edgeopt.report import Report
from edgeopt.tasks import LoadedModel, load_torch

SAMPLE_PROMPTS = 3
SAMPLE_TOKENS = 24
# Calibration prefills for quantizers that look at activations (GPTQ-style): 8,192
# tokens, the amount the SmolLM2 study settled on; more mostly costs time.
CALIBRATION_SEQUENCES = 16
CALIBRATION_LEN = 512


@dataclass(frozen=True)
class DecoderTask:
    """What the shared bundle writer reads from a task: the model, its tokenizer, its io."""

    loaded: LoadedModel
    io: DecoderIO


def compile_decoder(req: CompileRequest, journal: Journal,
                    eval_config: DecoderEvalConfig | None = None) -> Report:
    """Run every stage for a causal LM and write the bundle."""
    started = time.perf_counter()
    recipe, eval_config = req.recipe, eval_config or DecoderEvalConfig()
    if req.eval_path is not None:
        text, source = read_text(req.eval_path), req.eval_path.name
    else:
        text, source = "\n".join(req.data.texts), req.data.source
    with tempfile.TemporaryDirectory(prefix="edgeopt-") as tmp:
        work = Path(tmp)
        with journal.stage("load", {"path": str(req.src.path)}) as rec:
            loaded = load_torch(req.src, trust_remote_code=req.trust_remote_code)
            rec.notes["class"] = type(loaded.model).__name__
        with journal.stage("export", {"opset": max(recipe.export.opset, MIN_OPSET)}) as rec:
            exported, io = export_decoder(loaded, recipe.export, work, rec.notes)
            rec.finish(None, exported)
            rec.notes |= {"layers": io.num_layers, "kv_heads": io.num_kv_heads,
                          "head_dim": io.head_dim}
        with journal.stage("quantize") as rec:
            context, rec.notes["calibration"] = _calibration(loaded, io, req, text,
                                                             eval_config.max_tokens)
            rec.notes["calibration_sequences"] = len(context.calibration)
            config = recipe.quantize_for("text-generation")
            final = quantize(_quantizable(exported, config, work, rec), config, work, rec, context)
            rec.finish(exported, final)
        with journal.stage("validate", {"max_tokens": eval_config.max_tokens,
                                        "window": eval_config.window}) as rec:
            tokenizer = loaded.tokenizer
            candidate = OnnxCausalLM.from_file(final.path, io, tokenizer, threads=eval_config.threads,
                                               disabled_optimizers=recipe.disabled_optimizers())
            reference = TorchCausalLM(loaded.model, io.eos_token_ids)
            parity = validate_decoder(candidate, reference, tokenizer, text, source,
                                      recipe.gates.for_task("text-generation"), eval_config)
            samples = _samples(candidate, text)
            rec.notes["passed"] = parity.passed
        with journal.stage("benchmark", {"seq_len": recipe.bench.seq_len,
                                         "decode_tokens": recipe.bench.decode_tokens}) as rec:
            tokens = _bench_tokens(tokenizer, text, io, recipe.bench.seq_len,
                                   recipe.bench.decode_tokens)
            subject = "edgeopt " + req.target
            variants = {subject: final.path}
            if final.path != exported.path:
                variants["onnx-fp32"] = exported.path
            bench = bench_decoder(variants, io, reference, req.src.path, tokens, recipe.bench,
                                  subject, recipe.disabled_optimizers())
            rec.notes["decode_speedup_p50"] = bench.speedup
        report = build_report(req, journal, parity, bench.to_dict(), exported, final, extra={
            "Decoder throughput and memory": bench.to_markdown(),
            "Sample generations (bundle, greedy)": samples})
        with journal.stage("bundle", {"out": str(req.out)}):
            keep_model = parity.passed or not req.fail_on_parity
            report.seconds = time.perf_counter() - started
            _write_bundle(req, DecoderTask(loaded, io), final, parity, report, keep_model,
                          extra_manifest={"decoder": io.to_dict()})
    return report


def _quantizable(exported: OnnxArtifact, config: QuantConfig, work: Path,
                 rec: PassRecord) -> OnnxArtifact:
    """Weight quantizers need the tied lm_head as its own initializer; fp32 keeps one copy."""
    if isinstance(config, NoQuantConfig):
        return exported
    return untie_lm_head(exported, work, rec)


def _calibration(loaded: LoadedModel, io: DecoderIO, req: CompileRequest, eval_text: str,
                 scored_tokens: int) -> tuple[QuantContext, str]:
    """Prefill feeds (empty past) and where they came from: the calibration file; else the
    eval text after the tokens perplexity scores (same domain, never scored), when it has
    a full sequence there; else the built-in sentences."""
    length = min(CALIBRATION_LEN, io.max_positions or CALIBRATION_LEN)
    tokenizer = loaded.tokenizer
    if req.calibration_path is not None:
        feeds = calibration_feeds(tokenizer, io, read_text(req.calibration_path),
                                  CALIBRATION_SEQUENCES, length)
        return QuantContext(calibration=tuple(feeds)), req.calibration_path.name
    if len(text_tokens(tokenizer, eval_text, scored_tokens + length)) >= scored_tokens + length:
        feeds = calibration_feeds(tokenizer, io, eval_text, CALIBRATION_SEQUENCES, length,
                                  skip_tokens=scored_tokens)
        return QuantContext(calibration=tuple(feeds)), f"eval text after token {scored_tokens}"
    feeds = calibration_feeds(tokenizer, io, "\n".join(req.calibration.texts),
                              CALIBRATION_SEQUENCES, length)
    return QuantContext(calibration=tuple(feeds)), req.calibration.source


def _bench_tokens(tokenizer: Any, text: str, io: DecoderIO, seq_len: int,
                  decode_tokens: int) -> BenchTokens:
    """Real text tokens; the prompt is shortened when the model has fewer positions."""
    limit = io.max_positions or seq_len + decode_tokens
    decode_tokens = min(decode_tokens, max(limit // 2, 1))
    seq_len = min(seq_len, limit - decode_tokens)
    return BenchTokens.from_ids(text_tokens(tokenizer, text, seq_len + decode_tokens), seq_len,
                                decode_tokens)


def _samples(candidate: OnnxCausalLM, text: str) -> str:
    """A few greedy continuations of the eval prompts, for a human to read in the report."""
    lines = []
    for prompt in prompts_from_text(text, SAMPLE_PROMPTS):
        out = candidate.generate_text(prompt, SAMPLE_TOKENS)
        lines.append(f"- `{prompt}` → `{' '.join(out.split())}`")
    return "\n".join(lines)
