"""Recipes: what a compile does, as small frozen dataclasses.

A recipe is what a target YAML file holds (``recipes/targets/*.yaml``) and what
``--recipe FILE`` reads. Every section is a frozen dataclass validated in
``__post_init__``; the quantization section picks one config type by ``method``.
Serialized recipes carry ``version`` so a report can say exactly what ran. Reading them
from YAML is :mod:`edgeopt.recipe_yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeopt.errors import RecipeError
from edgeopt.families import (
    FEATURE_EXTRACTION,
    TEXT_CLASSIFICATION,
    TEXT_GENERATION,
    TOKEN_CLASSIFICATION,
)
from edgeopt.gates import Gates

RECIPE_VERSION = 1


def check(cond: bool, message: str) -> None:
    """Raise :class:`RecipeError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise RecipeError(message)


KV_CACHE_MODES = ("in-place", "concat")


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export settings."""

    opset: int = 17
    # Sequence length of the example input used for tracing; axes stay dynamic.
    trace_seq_len: int = 16
    # Decoders: "in-place" hands attention to onnxruntime's GroupQueryAttention, which
    # writes each step's K/V into a preallocated cache buffer; "concat" keeps ONNX
    # Attention (portable to any opset-23 runtime), whose present is a fresh copy.
    kv_cache: str = "in-place"

    def __post_init__(self) -> None:
        check(14 <= self.opset <= 23, f"export.opset must be 14..23, got {self.opset}")
        check(self.trace_seq_len >= 2, "export.trace_seq_len must be >= 2")
        check(self.kv_cache in KV_CACHE_MODES,
              f"export.kv_cache must be one of {', '.join(KV_CACHE_MODES)}, got {self.kv_cache!r}")


@dataclass(frozen=True)
class OptimizeConfig:
    """onnxruntime transformer fusions, kept only when they keep parity."""

    fusions: bool = True
    # Fused Attention / EmbedLayerNormalization hide their weights from weight-only
    # quantizers (MatMulNBits covers MatMul and Gather only): INT4 targets turn them off.
    fuse_attention: bool = True
    # Fuse attention as MultiHeadAttention (Q/K/V projections stay separate MatMuls that
    # the quantizer and the outlier split can see) instead of one packed Attention op.
    separate_qkv: bool = False
    fuse_embeddings: bool = True
    # onnxruntime 1.32's CPU SkipLayerNormalization is slower than Add + LayerNormalization;
    # off also keeps onnxruntime from re-fusing it at load (listed in the manifest).
    fuse_skip_layernorm: bool = True
    # The fused graph must match the plain export within this (fp32 vs fp32).
    parity_atol: float = 1e-3

    def __post_init__(self) -> None:
        check(self.parity_atol > 0, "optimize.parity_atol must be > 0")


# One explicit registry: method name -> config type. Refuses duplicates.
QUANT_CONFIGS: dict[str, type] = {}


def register_quant_config(cls: type) -> type:
    """Add a quantization config type under its ``method`` name."""
    name = cls.method
    if name in QUANT_CONFIGS:
        raise ValueError(f"quantization method {name!r} registered twice")
    QUANT_CONFIGS[name] = cls
    return cls


@register_quant_config
@dataclass(frozen=True)
class NoQuantConfig:
    """Keep fp32 weights."""

    method: ClassVar[str] = "none"


@register_quant_config
@dataclass(frozen=True)
class DynamicInt8Config:
    """INT8 weights, activations quantized at run time (MatMulInteger / DynamicQuantizeMatMul)."""

    method: ClassVar[str] = "dynamic-int8"
    quantizer: ClassVar[str] = "edgeopt.quant.dynamic"  # the module that registers its quantizer
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "int8"
    quantize_embeddings: bool = True
    # Node names (after optimization) kept in float.
    exclude: tuple[str, ...] = ()
    # Input channels whose calibration max |x| exceeds this multiple of the median go to
    # a small float MatMul beside the INT8 one (None: no split). See quant/outlier_split.
    outlier_threshold: float | None = None
    outlier_max_channels: int = 8
    # SmoothQuant strength for the inputs of packed Attention (QAttention quantizes them
    # per tensor): loud LayerNorm channels move into the Q/K/V weight rows; 0 = off.
    smooth_attention_alpha: float = 0.0
    # Any node whose INT8 output, fed exact inputs, falls below this SQNR on the
    # calibration rows stays float (None: no guard). Catches token-wise massive
    # activations that no per-tensor scale or channel split can hold.
    min_node_sqnr_db: float | None = None
    # Q, K and V of each MultiHeadAttention (optimize.separate_qkv) as one MatMul whose
    # input is quantized with a scale per token instead of per tensor. See quant/token_scales.
    per_token_attention: bool = False

    def __post_init__(self) -> None:
        check(self.weight_type in ("int8", "uint8"), "quantize.weight_type must be int8 or uint8")
        check(self.outlier_threshold is None or self.outlier_threshold > 1.0,
               "quantize.outlier_threshold must be > 1 (a multiple of the median channel)")
        check(self.outlier_max_channels >= 1, "quantize.outlier_max_channels must be >= 1")
        check(0.0 <= self.smooth_attention_alpha < 1.0, "quantize.smooth_attention_alpha must be in [0, 1)")

    # What an accuracy budget does to a node it keeps: dynamic INT8 has no wider
    # activation type, so the node stays float.
    kept_precision: ClassVar[str] = "float"

    def with_kept(self, nodes: tuple[str, ...]) -> DynamicInt8Config:
        """A copy that leaves ``nodes`` in float."""
        return dataclasses.replace(self, exclude=_merged(self.exclude, nodes))


@register_quant_config
@dataclass(frozen=True)
class WeightOnlyInt4Config:
    """Block-wise INT4 weights for MatMuls (MatMulNBits), embeddings as GatherBlockQuantized."""

    method: ClassVar[str] = "weight-only-int4"
    quantizer: ClassVar[str] = "edgeopt.quant.int4"  # the module that registers its quantizer
    block_size: int = 128
    symmetric: bool = True
    # Bits of every MatMul not named in int8_nodes: 4, or 8 for weight-only INT8.
    bits: int = 4
    # The largest block an 8-bit MatMul takes: the largest power of two up to it that
    # divides K. The int8 activations inside the kernel are scaled per block too, so a
    # smaller block is more faithful (llama.cpp's Q8_0 uses 32).
    int8_block_size: int = 128
    # MatMulNBits compute type: 0 = as input (fp32), 4 = int8 activations (fast on CPU).
    accuracy_level: int = 4
    # rtn: round to nearest (data-free); gptq: edgeopt's GPTQ with scales
    # searched on calibration data (quant/blockquant); hqq: onnxruntime's HQQ.
    algorithm: str = "rtn"
    quantize_embeddings: bool = True
    # MatMuls kept at 8 bits (8-bit MatMulNBits) because 4 bits cost too much accuracy:
    # node names or shell-style patterns ("*mlp.down_proj*", "lm_head*").
    int8_nodes: tuple[str, ...] = ()
    # A tied word table and LM head stored once, as the head's 8-bit blocks that the
    # embedding lookup reads too (needs the head among int8_nodes).
    share_embedding: bool = False
    # SmoothQuant migration strength for the gated MLP product before each down
    # projection (quant/smooth_act); 0 = off. Needs calibration rows.
    smooth_alpha: float = 0.0
    # The same smoothing, at the same strength, for the 8-bit MatMuls an RMSNorm feeds and
    # the output projection after attention (folded into the norm weight and the value
    # columns). A tied LM head is left alone: its table is the embedding's.
    smooth_groups: bool = False
    # Activation-aware scales (quant/scale_search) searched per RMSNorm group and per
    # output projection, folded into the norm or value weights. Needs calibration rows.
    scale_search: bool = False

    def __post_init__(self) -> None:
        check(
            self.block_size in (16, 32, 64, 128, 256),
            "quantize.block_size must be a power of two in 16..256",
        )
        check(self.int8_block_size in (16, 32, 64, 128),
              "quantize.int8_block_size must be a power of two in 16..128")
        check(self.accuracy_level in (0, 1, 2, 3, 4), "quantize.accuracy_level must be 0..4")
        check(self.algorithm in ("rtn", "hqq", "gptq"), "quantize.algorithm must be rtn|hqq|gptq")
        check(self.bits in (4, 8), "quantize.bits must be 4 or 8")
        check(self.bits == 4 or self.native,
               "quantize.bits 8 needs symmetric: true and algorithm rtn or gptq")
        check(self.symmetric or self.algorithm != "gptq", "quantize.algorithm gptq needs symmetric: true")
        check(self.native or not (self.int8_nodes or self.share_embedding),
               "quantize.int8_nodes and share_embedding need symmetric: true and algorithm rtn or gptq")
        check(0.0 <= self.smooth_alpha < 1.0, "quantize.smooth_alpha must be in [0, 1)")
        check(self.native or not self.smooth_alpha,
               "quantize.smooth_alpha needs symmetric: true and algorithm rtn or gptq")
        check(not self.smooth_groups or self.smooth_alpha > 0,
              "quantize.smooth_groups needs smooth_alpha > 0 (the strength it smooths with)")
        check(self.native or not self.scale_search,
               "quantize.scale_search needs symmetric: true and algorithm rtn or gptq")

    @property
    def native(self) -> bool:
        """Whether edgeopt writes the MatMulNBits itself (symmetric rtn, gptq) rather
        than onnxruntime's quantizer (hqq, asymmetric rtn)."""
        return self.symmetric and self.algorithm in ("rtn", "gptq")

    kept_precision: ClassVar[str] = "8-bit weights"

    def with_kept(self, nodes: tuple[str, ...]) -> WeightOnlyInt4Config:
        """A copy that quantizes ``nodes`` to 8 bits instead of 4."""
        return dataclasses.replace(self, int8_nodes=_merged(self.int8_nodes, nodes))


ACTIVATION_TYPES = ("uint8", "int8", "uint16", "int16")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PROVIDER_RULES = ("none", "qnn")


@register_quant_config
@dataclass(frozen=True)
class StaticInt8Config:
    """INT8 weights and activations whose scales come from calibration on real rows,
    written as QuantizeLinear/DequantizeLinear pairs (QDQ): the form NNAPI, XNNPACK,
    QNN and the CPU EP turn into integer kernels. See quant/static."""

    method: ClassVar[str] = "static-int8"
    quantizer: ClassVar[str] = "edgeopt.quant.static"  # the module that registers its quantizer
    # How a tensor's range is chosen from its calibration values: minmax keeps every
    # outlier, percentile clips the top (100 - percentile)%, entropy minimizes KL.
    calibration: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activation_type: str = "uint8"
    activation_symmetric: bool = False
    weight_type: str = "int8"
    weight_symmetric: bool = True
    # Op types to quantize; empty means every op type in the graph (float tensors only).
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    # MatMuls of two activations (attention scores, context) quantize badly with one
    # static scale; they stay float unless this is true (onnxruntime's MatMulConstBOnly
    # is ignored by its QDQ quantizer, so edgeopt excludes them itself).
    activation_matmuls: bool = False
    # Quantize op outputs too (whole DQ -> op -> Q units, what NNAPI and QNN map to
    # integer kernels). Off: a MatMul's output stays float for the float Add after it.
    quantize_outputs: bool = False
    # 16-bit activations (A16W8) for these op types or node names; weights and embedding
    # tables stay 8-bit.
    int16_op_types: tuple[str, ...] = ()
    int16_nodes: tuple[str, ...] = ()
    # Node names (after optimization) kept in float.
    exclude: tuple[str, ...] = ()
    # Input channels whose calibration max |x| exceeds this multiple of the median go to
    # a small float MatMul beside the quantized one (None: no split); quant/outlier_split.
    outlier_threshold: float | None = None
    outlier_max_channels: int = 8
    # Static input shape [batch, sequence] for providers that need one (NNAPI, QNN):
    # calibration rows are padded to it and the graph's input dims are fixed.
    fixed_batch: int | None = None
    fixed_sequence: int | None = None
    # Extra rules of one execution provider (edgeopt/providers/<name>.py).
    provider_rules: str = "none"

    def __post_init__(self) -> None:
        check(self.calibration in CALIBRATION_METHODS,
               f"quantize.calibration must be one of {', '.join(CALIBRATION_METHODS)}")
        check(90.0 <= self.percentile < 100.0, "quantize.percentile must be in [90, 100)")
        check(self.activation_type in ACTIVATION_TYPES,
               f"quantize.activation_type must be one of {', '.join(ACTIVATION_TYPES)}")
        check(self.weight_type in ("int8", "uint8"), "quantize.weight_type must be int8 or uint8")
        check((self.fixed_batch is None) == (self.fixed_sequence is None),
               "quantize.fixed_batch and quantize.fixed_sequence go together (set both or neither)")
        check(self.fixed_batch is None or self.fixed_batch >= 1, "quantize.fixed_batch must be >= 1")
        check(self.fixed_sequence is None or self.fixed_sequence >= 2,
               "quantize.fixed_sequence must be >= 2")
        check(self.provider_rules in PROVIDER_RULES,
               f"quantize.provider_rules must be one of {', '.join(PROVIDER_RULES)}")
        check(self.outlier_threshold is None or self.outlier_threshold > 1.0,
               "quantize.outlier_threshold must be > 1 (a multiple of the median channel)")
        check(self.outlier_max_channels >= 1, "quantize.outlier_max_channels must be >= 1")

    @property
    def wide_activations(self) -> bool:
        """True when activations are already 16-bit everywhere (A16W8)."""
        return self.activation_type.endswith("16")

    @property
    def fixed_shape(self) -> tuple[int, int] | None:
        if self.fixed_batch is None or self.fixed_sequence is None:
            return None
        return self.fixed_batch, self.fixed_sequence

    @property
    def kept_precision(self) -> str:
        return "float" if self.wide_activations else "16-bit activations"

    def with_kept(self, nodes: tuple[str, ...]) -> StaticInt8Config:
        """A copy that keeps ``nodes`` in higher precision: 16-bit activations when the
        rest is 8-bit, float when activations are 16-bit already."""
        if self.wide_activations:
            return dataclasses.replace(self, exclude=_merged(self.exclude, nodes))
        return dataclasses.replace(self, int16_nodes=_merged(self.int16_nodes, nodes))


@register_quant_config
@dataclass(frozen=True)
class Float16Config:
    """fp16 weights and compute with fp32 graph inputs and outputs (onnxruntime's
    ``convert_float_to_float16``): for GPUs, whose fp16 units double fp32 throughput. See
    quant/float16."""

    method: ClassVar[str] = "fp16"
    quantizer: ClassVar[str] = "edgeopt.quant.float16"  # the module that registers its quantizer
    # fp32 graph inputs and outputs (a Cast at each end): apps feed and read what they
    # did for the fp32 bundle.
    keep_io_types: bool = True
    # Op types kept in fp32 beside onnxruntime's own list (its DEFAULT_OP_BLOCK_LIST).
    keep_fp32_ops: tuple[str, ...] = ()

    kept_precision: ClassVar[str] = "float"


def _merged(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*old, *new)))


QuantConfig = (NoQuantConfig | DynamicInt8Config | WeightOnlyInt4Config | StaticInt8Config
               | Float16Config)



@dataclass(frozen=True)
class AccuracyBudget:
    """How much quantization may cost, on the eval data; edgeopt keeps the most
    sensitive layers in higher precision until it holds (see :mod:`edgeopt.budget`)."""

    # Accuracy points lost against the PyTorch model, absolute (0.003 = 0.3 points);
    # needs labelled eval data.
    max_accuracy_drop: float | None = None
    # Classifiers: label agreement with the PyTorch model (per real token for token
    # classification); embeddings: the lowest per-row cosine to it.
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        check(self.max_accuracy_drop is not None or self.min_agreement is not None,
               "an accuracy budget needs max_accuracy_drop or min_agreement")
        check(self.max_accuracy_drop is None or 0.0 <= self.max_accuracy_drop <= 1.0,
               f"max_accuracy_drop must be within [0, 1] (0.003 = 0.3 points), "
               f"got {self.max_accuracy_drop}")
        check(self.min_agreement is None or 0.0 < self.min_agreement <= 1.0,
               f"min_agreement must be within (0, 1], got {self.min_agreement}")

    def gates(self, task: str) -> dict[str, float]:
        """The parity gates that say whether the budget holds for ``task``."""
        out: dict[str, float] = {}
        if self.max_accuracy_drop is not None:
            check(task == TEXT_CLASSIFICATION,
                   f"max_accuracy_drop needs a classifier; {task} models have no accuracy "
                   "(use min_agreement, the lowest cosine, for embeddings)")
            out["max_accuracy_drop"] = self.max_accuracy_drop
        if self.min_agreement is not None:
            labelled = task in (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION)
            key = "min_label_agreement" if labelled else "min_cosine_min"
            check(labelled or task == FEATURE_EXTRACTION,
                   f"accuracy budgets apply to classifiers and embedding models, not {task}")
            out[key] = self.min_agreement
        return out


@dataclass(frozen=True)
class TaskGates:
    """Gates per task: a cosine gate means something for embeddings, not for 2-class logits."""

    text_classification: Gates = field(default_factory=Gates)
    feature_extraction: Gates = field(default_factory=Gates)
    token_classification: Gates = field(default_factory=Gates)
    text_generation: Gates = field(default_factory=Gates)

    def for_task(self, task: str) -> Gates:
        return getattr(self, task.replace("-", "_"))

    def override(self, task: str, **values: float | None) -> TaskGates:
        """Copy with some gates of ``task`` replaced (validated)."""
        key = task.replace("-", "_")
        return dataclasses.replace(self, **{key: dataclasses.replace(getattr(self, key), **values)})


@dataclass(frozen=True)
class BenchConfig:
    """CPU benchmark settings: batch-1 latency with warm-up and repeats."""

    seq_len: int = 128
    batch: int = 1
    threads: int = 2
    warmup: int = 10
    repeats: int = 50
    torch_baseline: bool = True
    # Decoders: prefill is timed on a prompt of seq_len tokens, decode over this many
    # new tokens with the KV cache.
    decode_tokens: int = 64

    def __post_init__(self) -> None:
        check(self.seq_len >= 1 and self.batch >= 1, "bench.seq_len and bench.batch must be >= 1")
        check(self.threads >= 1, "bench.threads must be >= 1")
        check(self.warmup >= 0 and self.repeats >= 3, "bench needs warmup >= 0 and repeats >= 3")


@dataclass(frozen=True)
class PreflightConfig:
    """The compile's check that the target's own accelerator (the first accelerator in
    ``providers``) takes the graph: its placement always goes into the report
    (:mod:`edgeopt.compiler.preflight`); this says whether a graph it cannot run whole
    fails the compile."""

    # Fail the compile unless the accelerator takes every node in one partition. Off by
    # default: a target turns it on once its graphs fit (qnn-int8 does).
    require_one_graph: bool = False


@dataclass(frozen=True)
class Recipe:
    """Everything one compile does. Targets are named recipes."""

    name: str
    description: str
    export: ExportConfig = field(default_factory=ExportConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    quantize: QuantConfig = field(default_factory=NoQuantConfig)
    gates: TaskGates = field(default_factory=TaskGates)
    bench: BenchConfig = field(default_factory=BenchConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    version: int = RECIPE_VERSION
    # Causal LMs' quantization when it differs from ``quantize`` (None: the same).
    decoder_quantize: QuantConfig | None = None
    # Torch-side stages run in order between load and export (edgeopt.recipe_prepare).
    prepare: tuple[Any, ...] = ()
    # Also ship model.ort (onnxruntime's mobile format) and the reduced-build operator
    # config beside model.onnx (edgeopt.compiler.ort_format).
    ort_format: bool = False
    # Also ship model.text.onnx: the tokenizer in the graph (onnxruntime-extensions), so
    # an app feeds strings (edgeopt.passes.tokenizer_graph).
    text_input: bool = False

    def __post_init__(self) -> None:
        check(bool(self.name), "recipe.name must not be empty")
        check(self.version == RECIPE_VERSION, f"recipe version {self.version} is not supported "
               f"(this edgeopt reads version {RECIPE_VERSION})")
        check(not getattr(self.quantize, "per_token_attention", False) or self.optimize.separate_qkv,
              "quantize.per_token_attention needs optimize.separate_qkv: true (packed Attention "
              "quantizes its input itself, per tensor)")

    def disabled_optimizers(self) -> tuple[str, ...]:
        """onnxruntime load-time fusions a session of this bundle must skip."""
        return () if self.optimize.fuse_skip_layernorm else ("SkipLayerNormFusion",)

    def quantize_for(self, task: str) -> QuantConfig:
        """The quantization a model of ``task`` gets."""
        if task == TEXT_GENERATION and self.decoder_quantize is not None:
            return self.decoder_quantize
        return self.quantize

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports and manifests, ``method`` included."""
        data = dataclasses.asdict(self)
        data["quantize"] = {"method": self.quantize.method, **data["quantize"]}
        if self.decoder_quantize is not None:
            data["decoder_quantize"] = {"method": self.decoder_quantize.method,
                                        **data["decoder_quantize"]}
        data["prepare"] = [{"stage": c.stage, **dataclasses.asdict(c)} for c in self.prepare]
        return data

    def with_gates(self, task: str, **overrides: float | None) -> Recipe:
        """Return a copy with some gates of ``task`` replaced (validated)."""
        return dataclasses.replace(self, gates=self.gates.override(task, **overrides))
