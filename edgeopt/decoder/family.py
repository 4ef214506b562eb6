"""The decoder compile, top to bottom: load, (prepare stages), export (with KV cache),
quantize (after untying the LM head), validate (perplexity and greedy agreement on plain
text), (accelerator preflight), benchmark (tokens per second, peak memory), bundle. Each stage is one function
with the core's stage signature; the driver runs them in this order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.artifact import LoadedModel, OnnxArtifact
from edgeopt.compiler.preflight import preflight
from edgeopt.compiler.preflight import wanted as preflight_wanted
from edgeopt.compiler.request import InputRequest, optional_path
from edgeopt.compiler.stage import Family, Stage, StageContext
from edgeopt.compiler.writer import bundle
from edgeopt.decoder.evaltext import read_text
from edgeopt.decoder.validate import DecoderEvalConfig
from edgeopt.errors import DataError
from edgeopt.evaldata import EvalData, builtin_sentences
from edgeopt.families import DECODER_TASK_NAMES, TEXT_GENERATION
from edgeopt.recipe import BenchConfig, ExportConfig, NoQuantConfig

SAMPLE_PROMPTS = 3
SAMPLE_TOKENS = 24
# Calibration prefills for quantizers that look at activations (GPTQ-style): 8,192
# tokens, the amount the SmolLM2 study settled on; more mostly costs time.
CALIBRATION_SEQUENCES = 16
CALIBRATION_LEN = 512


@dataclass(frozen=True)
class DecoderInputs:
    """Plain eval text, an optional plain calibration text, and how much to score."""

    text: str
    source: str
    calibration_text: str | None
    calibration_source: str | None
    eval_config: DecoderEvalConfig


def read_inputs(req: InputRequest) -> DecoderInputs:
    """Decoders read plain text: the eval file (else the built-in sentences) and a
    calibration file if given; both are read now, before any heavy work."""
    text, source = _text(req.eval_data, "eval")
    calibration = None, None
    if req.calibration_data is not None:
        calibration = _text(req.calibration_data, "calibration")
    return DecoderInputs(text, source, *calibration, req.decoder_eval or DecoderEvalConfig())


def _text(value: Any, what: str) -> tuple[str, str]:
    if isinstance(value, EvalData):
        return "\n".join(value.texts), value.source
    path = optional_path(value)
    if path is None:
        data = builtin_sentences()
        return "\n".join(data.texts), data.source
    if not path.is_file():
        raise DataError(f"{what} data {path} does not exist; pass a plain-text file")
    return read_text(path), path.name


@dataclass
class DecoderContext(StageContext):
    """Decoder state the stages share."""

    io: Any = None  # DecoderIO: the cache layout of the exported graph
    reference: Any = None  # TorchCausalLM over ``torch``: what validation and the bench compare with

    @property
    def inputs(self) -> DecoderInputs:
        return self.request.inputs


def load(_artifact: None, _config: None, _workdir: Path, ctx: DecoderContext) -> LoadedModel:
    from edgeopt.tasks import load_torch

    ctx.record.config = {"path": str(ctx.request.src.path)}
    loaded = load_torch(ctx.request.src, trust_remote_code=ctx.request.trust_remote_code)
    ctx.record.notes["class"] = type(loaded.model).__name__
    return loaded


def export(model: LoadedModel, config: ExportConfig, workdir: Path, ctx: DecoderContext
           ) -> OnnxArtifact:
    from edgeopt.decoder.export import MIN_OPSET, export_decoder

    ctx.torch, ctx.tokenizer = model, model.tokenizer
    ctx.record.config["opset"] = max(config.opset, MIN_OPSET)
    ctx.exported, ctx.io = export_decoder(model, config, workdir, ctx.record.notes)
    ctx.record.notes |= {"layers": ctx.io.num_layers, "kv_heads": ctx.io.num_kv_heads,
                         "head_dim": ctx.io.head_dim}
    ctx.manifest["decoder"] = ctx.io.to_dict()
    return ctx.exported


def quantize(graph: OnnxArtifact, config: Any, workdir: Path, ctx: DecoderContext) -> OnnxArtifact:
    """Weight quantizers need the tied lm_head as its own initializer; fp32 keeps one copy."""
    from edgeopt.compiler.quantize import quant_context
    from edgeopt.decoder.untie import untie_lm_head
    from edgeopt.quant.registry import quantize

    feeds, ctx.record.notes["calibration"] = _calibration(ctx)
    context = quant_context(config, tuple(feeds))
    ctx.record.notes["calibration_sequences"] = len(context.calibration)
    source = graph if isinstance(config, NoQuantConfig) else untie_lm_head(graph, workdir, ctx.record)
    return quantize(source, config, workdir, ctx.record, context)


def _calibration(ctx: DecoderContext) -> tuple[list[Any], str]:
    """Prefill feeds (empty past) and where they came from: the calibration file; else the
    eval text after the tokens perplexity scores (same domain, never scored), when it has
    a full sequence there; else the built-in sentences."""
    from edgeopt.decoder.evaltext import calibration_feeds, text_tokens

    inputs, io, tokenizer = ctx.inputs, ctx.io, ctx.torch.tokenizer
    length = min(CALIBRATION_LEN, io.max_positions or CALIBRATION_LEN)
    scored = inputs.eval_config.max_tokens
    if inputs.calibration_text is not None:
        feeds = calibration_feeds(tokenizer, io, inputs.calibration_text, CALIBRATION_SEQUENCES, length)
        return feeds, str(inputs.calibration_source)
    if len(text_tokens(tokenizer, inputs.text, scored + length)) >= scored + length:
        feeds = calibration_feeds(tokenizer, io, inputs.text, CALIBRATION_SEQUENCES, length,
                                  skip_tokens=scored)
        return feeds, f"eval text after token {scored}"
    builtin = builtin_sentences()
    feeds = calibration_feeds(tokenizer, io, "\n".join(builtin.texts), CALIBRATION_SEQUENCES, length)
    return feeds, builtin.source


def validate(graph: OnnxArtifact, _config: None, _workdir: Path, ctx: DecoderContext) -> OnnxArtifact:
    from edgeopt.decoder.generate import OnnxCausalLM
    from edgeopt.decoder.reference import TorchCausalLM
    from edgeopt.decoder.validate import validate_decoder

    inputs, recipe, tokenizer = ctx.inputs, ctx.request.recipe, ctx.torch.tokenizer
    cfg = inputs.eval_config
    ctx.record.config = {"max_tokens": cfg.max_tokens, "window": cfg.window}
    candidate = OnnxCausalLM.from_file(graph.path, ctx.io, tokenizer, threads=cfg.threads,
                                       disabled_optimizers=recipe.disabled_optimizers())
    ctx.reference = TorchCausalLM(ctx.torch.model, ctx.io.eos_token_ids)
    ctx.parity = validate_decoder(candidate, ctx.reference, tokenizer, inputs.text, inputs.source,
                                  recipe.gates.for_task(TEXT_GENERATION), cfg)
    ctx.sections.append(_samples(candidate, inputs.text))
    ctx.record.notes["passed"] = ctx.parity.passed
    return graph


def benchmark(graph: OnnxArtifact, config: BenchConfig, _workdir: Path, ctx: DecoderContext
              ) -> OnnxArtifact:
    from edgeopt.decoder.bench import Throughput, bench_decoder

    ctx.record.config = {"seq_len": config.seq_len, "decode_tokens": config.decode_tokens}
    tokens = _bench_tokens(ctx, config)
    subject = "edgeopt " + ctx.request.target
    variants = {subject: graph.path}
    if graph.path != ctx.exported.path:
        variants["onnx-fp32"] = ctx.exported.path
    result = bench_decoder(variants, ctx.io, ctx.reference, ctx.request.src.path, tokens, config,
                           subject, ctx.request.recipe.disabled_optimizers())
    ctx.record.notes["decode_speedup_p50"] = result.speedup
    ctx.bench = result.to_dict()
    ctx.sections.append(Throughput(result))
    return graph


def _bench_tokens(ctx: DecoderContext, config: BenchConfig) -> Any:
    """Real text tokens; the prompt is shortened when the model has fewer positions."""
    from edgeopt.decoder.bench import BenchTokens
    from edgeopt.decoder.evaltext import text_tokens

    limit = ctx.io.max_positions or config.seq_len + config.decode_tokens
    decode_tokens = min(config.decode_tokens, max(limit // 2, 1))
    seq_len = min(config.seq_len, limit - decode_tokens)
    ids = text_tokens(ctx.torch.tokenizer, ctx.inputs.text, seq_len + decode_tokens)
    return BenchTokens.from_ids(ids, seq_len, decode_tokens)


@dataclass(frozen=True)
class SampleGenerations:
    """A few greedy continuations of the eval prompts, for a human to read (a report section)."""

    key: ClassVar[str] = "samples"
    title: ClassVar[str] = "Sample generations (bundle, greedy)"
    samples: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"samples": [{"prompt": p, "completion": c} for p, c in self.samples]}

    def to_markdown(self) -> str:
        return "\n".join(f"- `{p}` → `{' '.join(c.split())}`" for p, c in self.samples)


def _samples(candidate: Any, text: str) -> SampleGenerations:
    from edgeopt.decoder.evaltext import prompts_from_text

    return SampleGenerations(tuple((p, candidate.generate_text(p, SAMPLE_TOKENS))
                                   for p in prompts_from_text(text, SAMPLE_PROMPTS)))


DECODER = Family(
    name="decoder",
    tasks=DECODER_TASK_NAMES,
    read_inputs=read_inputs,
    context=DecoderContext,
    load=Stage("load", load),
    stages=(
        Stage("export", export, config=lambda r: r.export),
        Stage("quantize", quantize, config=lambda r: r.quantize_for(TEXT_GENERATION)),
        Stage("validate", validate),
        Stage("preflight", preflight, config=lambda r: r.preflight, when=preflight_wanted),
        Stage("benchmark", benchmark, config=lambda r: r.bench),
        Stage("bundle", bundle),
    ),
)
