"""The tokenizer as ONNX ops in front of the model: a bundle that takes strings.

onnxruntime-extensions' ``gen_processing_models`` turns the vocabulary into one custom
op (``BertTokenizer`` for WordPiece, ``GPT2Tokenizer`` for byte-level BPE with GPT-2's
split, ``HfJsonTokenizer`` over the whole tokenizer.json for byte-level BPE with its own
Split pattern, as Llama 3's; that one adds the post-processor's special tokens). Those ops
tokenize one string at a time (WordPiece) or pad with 0 (BPE), add their own special
tokens or none, and do not truncate; so each string goes through the op inside an ONNX
``Loop`` that adds the special tokens transformers adds, truncates as transformers does
(keeping the closing token) and pads the batch on the tokenizer's side with its pad id.
The ids this graph yields are checked against transformers on every eval row by
:mod:`edgeopt.passes.text_check`; nothing here assumes they match.

    text [batch] --Loop(tokenize, specials, truncate, pad)--> input_ids, attention_mask
        (token_type_ids: zeros) --> model --> logits, label (arg-max) | sentence_embedding
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.artifact import OnnxArtifact
from edgeopt.errors import ModelError, UsageError

CUSTOM_OPS_PACKAGE = "onnxruntime-extensions"
CUSTOM_OPS_DOMAIN = "ai.onnx.contrib"
TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
TEXT_MODEL = "model.text.onnx"
JSON_OP = "HfJsonTokenizer"  # onnxruntime-extensions' op that runs a whole tokenizer.json


def extensions() -> Any:
    """The onnxruntime_extensions module, or a one-line error saying how to get it."""
    try:
        import onnxruntime_extensions
    except ImportError:
        raise UsageError(f"text input needs {CUSTOM_OPS_PACKAGE}: pip install "
                         f"'{CUSTOM_OPS_PACKAGE}' (the edgeopt[text] extra), or drop "
                         "--text-input / text_input") from None
    return onnxruntime_extensions


def custom_ops_library() -> str:
    """Path of the shared library an onnxruntime session registers for the tokenizer ops."""
    return extensions().get_library_path()


def custom_ops_version() -> str:
    return extensions().__version__


@dataclass(frozen=True)
class TokenizerPlan:
    """How one transformers tokenizer becomes graph ops: the custom op and its
    attributes, the special tokens the wrapper adds around its ids, and transformers'
    truncation and padding (what :meth:`EncoderTask.encode` asks for)."""

    op: str  # "BertTokenizer" | "GPT2Tokenizer" | "HfJsonTokenizer"
    attrs: dict[str, Any]
    prefix: tuple[int, ...]  # ids transformers puts before the text's (the op adds none)
    suffix: tuple[int, ...]
    max_length: int
    pad_id: int
    pad_left: bool
    # Truncation keeps the last id (the closing special token) when transformers adds one.
    keep_last: bool

    @property
    def kind(self) -> str:
        return {"BertTokenizer": "wordpiece", JSON_OP: "byte-level-bpe-split"}.get(self.op, "byte-level-bpe")


def plan_tokenizer(tokenizer: Any, max_length: int) -> TokenizerPlan:
    """The plan for ``tokenizer``, or a one-line :class:`ModelError` for a tokenizer
    onnxruntime-extensions has no op for here (SentencePiece, Unigram, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    name = type(tokenizer).__name__
    if backend is None:
        raise ModelError(f"text input: {name} has no tokenizer.json backend; only fast "
                         "WordPiece (BERT family) and byte-level BPE (GPT-2, RoBERTa) tokenizers "
                         "can be put in the graph")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    kind = model.get("type")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_left = getattr(tokenizer, "padding_side", "right") == "left"
    if kind == "WordPiece":
        op, attrs = "BertTokenizer", _wordpiece_attrs(spec, name)
        prefix: tuple[int, ...] = ()
        suffix: tuple[int, ...] = ()
        keep_last = bool(tokenizer("x")["input_ids"][-1:] == [tokenizer.sep_token_id])
    elif kind == "BPE" and _byte_level(spec):
        op, attrs = "GPT2Tokenizer", _bpe_attrs(model)
        prefix, suffix = _specials(tokenizer)
        keep_last = bool(suffix)
    elif kind == "BPE" and _own_split(spec):
        # The op reads tokenizer.json itself: its split pattern, and the post-processor's
        # special tokens, which it adds (so the wrapper adds none).
        op, attrs = JSON_OP, _json_attrs(tokenizer, backend.to_str())
        prefix, suffix = (), ()
        keep_last = bool(_specials(tokenizer)[1])
    else:
        pre = (spec.get("pre_tokenizer") or {}).get("type")
        raise ModelError(f"text input: {name} is a {kind} tokenizer (pre-tokenizer {pre}); only "
                         "WordPiece (BERT family) and byte-level BPE with GPT-2's split (GPT-2, "
                         "RoBERTa) or its own Split pattern (Llama 3, Qwen2) can be put in the "
                         "graph; compile without --text-input")
    return TokenizerPlan(op, attrs, prefix, suffix, max_length, int(pad_id), pad_left, keep_last)


def _wordpiece_attrs(spec: dict[str, Any], name: str) -> dict[str, Any]:
    norm = spec.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise ModelError(f"text input: {name}'s normalizer is {norm.get('type')}, not BERT's; "
                         "its WordPiece cannot be put in the graph as is")
    model = spec["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    lowercase = bool(norm.get("lowercase"))
    # BERT strips accents when it lowercases unless strip_accents says otherwise.
    strip = norm.get("strip_accents")
    return {"vocab": "\n".join(token for token, _ in vocab),
            "do_lower_case": int(lowercase),
            "strip_accents": int(lowercase if strip is None else strip),
            "tokenize_chinese_chars": int(bool(norm.get("handle_chinese_chars", True))),
            "unk_token": model.get("unk_token", "[UNK]"),
            "suffix_indicator": model.get("continuing_subword_prefix", "##")}


def _bpe_attrs(model: dict[str, Any]) -> dict[str, Any]:
    # tokenizers >= 0.20 writes merges as ["a", "b"] pairs; the op reads "a b" lines.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"vocab": json.dumps(model["vocab"], separators=(",", ":")),
            "merges": "\n".join(m.replace("\n", "<0x0A>") for m in merges)}


def _byte_level(spec: dict[str, Any]) -> bool:
    """GPT-2's byte-level BPE: no normalizer, the ByteLevel pre-tokenizer with GPT-2's
    split pattern (the op's). A Sequence with its own Split (Llama 3, SmolLM2's single
    digits) splits differently, on text the eval rows may not contain: refused."""
    pre = spec.get("pre_tokenizer") or {}
    return (spec.get("normalizer") is None and pre.get("type") == "ByteLevel"
            and bool(pre.get("use_regex", True)) and not pre.get("add_prefix_space", False))


def _own_split(spec: dict[str, Any]) -> bool:
    """Byte-level BPE whose own Split pattern (Llama 3, Qwen2) runs before a ByteLevel
    step that splits no further: what ``HfJsonTokenizer`` reads from tokenizer.json (the
    ids are still checked against transformers on every eval row)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    kinds = [p.get("type") for p in steps]
    return (spec.get("normalizer") is None and kinds.count("ByteLevel") == 1
            and kinds[-1] == "ByteLevel" and not steps[-1].get("use_regex", True)
            and set(kinds[:-1]) == {"Split"})


def _json_attrs(tokenizer: Any, tokenizer_json: str) -> dict[str, Any]:
    """``HfJsonTokenizer``'s attributes: tokenizer.json, and a tokenizer_config naming a
    class the op knows (transformers 5 writes its own backend's name there)."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizer"}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            config[key] = str(value)
    return {"tokenizer_vocab": tokenizer_json, "tokenizer_config": json.dumps(config)}


def _specials(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids transformers adds before and after a text's own (BOS/EOS, <s> </s>)."""
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare):])
    raise ModelError(f"text input: {type(tokenizer).__name__} adds special tokens inside the "
                     "text's ids; it cannot be put in the graph")


def tokenizer_model(plan: TokenizerPlan, opset: int, ir_version: int) -> Any:
    """The tokenizer graph alone: ``text`` [batch] -> ``input_ids``, ``attention_mask``
    [batch, sequence] int64, padded and truncated as transformers does."""
    import onnx
    from onnx import TensorProto, helper

    ortx = extensions()
    op_model, _ = ortx.gen_processing_models(plan.op, pre_kwargs=dict(plan.attrs))
    op_node = op_model.graph.node[0]
    i64 = TensorProto.INT64

    def const(name: str, values: list[int], dims: list[int] | None = None) -> Any:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name, i64, dims if dims is not None else [len(values)], values))

    body: list[Any] = [
        const("b_zero", [0]), const("b_one", [1]), const("b_len", [plan.max_length]),
        helper.make_node("Gather", [TEXT_INPUT, "b_i"], ["b_str"], axis=0),
        helper.make_node("Unsqueeze", ["b_str", "b_zero"], ["b_str1"]),
    ]
    tok = onnx.NodeProto()
    tok.CopyFrom(op_node)
    tok.input[0] = "b_str1"
    tok.output[0] = "b_raw"
    for k in range(1, len(tok.output)):  # outputs the wrapper does not read
        tok.output[k] = f"b_unused{k}"
    body += [tok, const("b_minus1", [-1]),
             helper.make_node("Reshape", ["b_raw", "b_minus1"], ["b_flat"]),
             helper.make_node("Cast", ["b_flat"], ["b_ids"], to=i64)]
    ids = "b_ids"
    if plan.prefix or plan.suffix:
        body += [const("b_prefix", list(plan.prefix)), const("b_suffix", list(plan.suffix)),
                 helper.make_node("Concat", ["b_prefix", ids, "b_suffix"], ["b_special"], axis=0)]
        ids = "b_special"
    body += [helper.make_node("Shape", [ids], ["b_n"])]
    if plan.keep_last:  # [first ... up to max_length-1] + [closing token]
        body += [helper.make_node("Min", ["b_n", "b_len"], ["b_k"]),
                 helper.make_node("Sub", ["b_k", "b_one"], ["b_head_end"]),
                 helper.make_node("Slice", [ids, "b_zero", "b_head_end"], ["b_head"]),
                 helper.make_node("Sub", ["b_n", "b_one"], ["b_last"]),
                 helper.make_node("Slice", [ids, "b_last", "b_n"], ["b_tail"]),
                 helper.make_node("Concat", ["b_head", "b_tail"], ["b_row"], axis=0)]
    else:
        body += [helper.make_node("Slice", [ids, "b_zero", "b_len"], ["b_row"])]
    body += [
        helper.make_node("Shape", ["b_row"], ["b_m"]),
        helper.make_node("Shape", ["b_acc_ids"], ["b_acc_shape"]),
        const("b_two", [2]), helper.make_node("Slice", ["b_acc_shape", "b_one", "b_two"], ["b_w"]),
        helper.make_node("Max", ["b_m", "b_w"], ["b_width"]),
        helper.make_node("Sub", ["b_width", "b_m"], ["b_row_pad"]),
        helper.make_node("Sub", ["b_width", "b_w"], ["b_acc_pad"]),
        helper.make_node("ConstantOfShape", ["b_m"], ["b_ones"],
                         value=helper.make_tensor("one", i64, [1], [1])),
    ]
    if plan.pad_left:
        row_pads, acc_pads = ["b_row_pad", "b_zero"], ["b_zero", "b_acc_pad", "b_zero", "b_zero"]
    else:
        row_pads, acc_pads = ["b_zero", "b_row_pad"], ["b_zero", "b_zero", "b_zero", "b_acc_pad"]
    body += [helper.make_node("Concat", row_pads, ["b_row_pads"], axis=0),
             helper.make_node("Concat", acc_pads, ["b_acc_pads"], axis=0),
             const("b_pad_id", [plan.pad_id], []), const("b_pad_zero", [0], [])]
    for acc, row, pad in (("b_acc_ids", "b_row", "b_pad_id"), ("b_acc_mask", "b_ones", "b_pad_zero")):
        body += [helper.make_node("Pad", [row, "b_row_pads", pad], [f"{acc}_row"]),
                 helper.make_node("Unsqueeze", [f"{acc}_row", "b_zero"], [f"{acc}_row2"]),
                 helper.make_node("Pad", [acc, "b_acc_pads", pad], [f"{acc}_wide"]),
                 helper.make_node("Concat", [f"{acc}_wide", f"{acc}_row2"], [f"{acc}_out"], axis=0)]
    body.append(helper.make_node("Identity", ["b_cond"], ["b_cond_out"]))

    def info(name: str, dtype: int, shape: list[Any] | None) -> Any:
        return helper.make_tensor_value_info(name, dtype, shape)

    body_graph = helper.make_graph(
        body, "tokenize_one",
        [info("b_i", i64, []), info("b_cond", TensorProto.BOOL, []),
         info("b_acc_ids", i64, None), info("b_acc_mask", i64, None)],
        [info("b_cond_out", TensorProto.BOOL, []), info("b_acc_ids_out", i64, None),
         info("b_acc_mask_out", i64, None)])
    outer = [
        helper.make_node("Shape", [TEXT_INPUT], ["t_batch1"]),
        helper.make_node("Squeeze", ["t_batch1"], ["t_batch"]),
        helper.make_node("Constant", [], ["t_true"],
                         value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        const("t_empty", [], [0, 0]),
        helper.make_node("Loop", ["t_batch", "t_true", "t_empty", "t_empty"],
                         ["input_ids", "attention_mask"], body=body_graph),
        const("t_zero", [0], []),
        helper.make_node("Mul", ["attention_mask", "t_zero"], ["token_type_ids"]),
    ]
    graph = helper.make_graph(
        outer, "text_to_ids", [info(TEXT_INPUT, TensorProto.STRING, ["batch"])],
        [info(n, i64, ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")])
    model = helper.make_model(graph, ir_version=ir_version, opset_imports=[
        helper.make_opsetid("", opset), helper.make_opsetid(CUSTOM_OPS_DOMAIN, 1)])
    onnx.checker.check_model(model)
    return model


def build_text_model(graph: OnnxArtifact, plan: TokenizerPlan, input_names: list[str],
                     task_output: str, add_label: bool, workdir: Path) -> OnnxArtifact:
    """``graph`` with the tokenizer in front: ``text`` in; the graph's outputs, the ids it
    tokenized (``input_ids``, ``attention_mask``) and, for classifiers, ``label`` out."""
    import onnx
    from onnx import TensorProto, compose, helper

    model = onnx.load(str(graph.path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    pre = tokenizer_model(plan, opset, model.ir_version)
    # The merged model needs every domain of both (com.microsoft fusions, the tokenizer's).
    domains = {o.domain: o.version for o in model.opset_import} | {CUSTOM_OPS_DOMAIN: 1}
    model.ClearField("opset_import")
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in domains.items())
    pre.ClearField("opset_import")
    pre.opset_import.extend(helper.make_opsetid(d, v) for d, v in domains.items())
    # Only the model's outputs: token_type_ids dangle for a model that reads none (RoBERTa).
    merged = compose.merge_models(pre, model, io_map=[(n, n) for n in input_names],
                                  prefix1="tok/", outputs=[o.name for o in model.graph.output])
    out = merged.graph
    _rename(out, f"tok/{TEXT_INPUT}", TEXT_INPUT)  # the prefix keeps names apart, not the input
    for name in ("input_ids", "attention_mask"):
        out.output.append(helper.make_tensor_value_info(f"tok/{name}", TensorProto.INT64,
                                                        ["batch", "sequence"]))
        out.node.append(helper.make_node("Identity", [f"tok/{name}"], [name]))
        out.output[-1].name = name
    if add_label:
        out.node.append(helper.make_node("ArgMax", [task_output], [LABEL_OUTPUT], axis=-1,
                                         keepdims=0))
        out.output.append(helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, ["batch"]))
    path = workdir / TEXT_MODEL
    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(path))
    return OnnxArtifact(path)


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename a value everywhere in ``graph`` and its subgraphs (the Loop body reads it)."""
    for v in graph.input:
        if v.name == old:
            v.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        for attr in node.attribute:
            if attr.g.node:
                _rename(attr.g, old, new)


def manifest_entry(path: Path, plan: TokenizerPlan, checked: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``text_input`` section: what an app loads, feeds, reads back and
    which custom-op library it must register on its session options first."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        "model": path.name,
        "inputs": [{"name": TEXT_INPUT, "dtype": "string", "shape": ["batch"]}],
        "outputs": [_describe(v) for v in graph.output],
        # onnxruntime-extensions: pip/npm/Maven/CocoaPods ship the same ops; register its
        # library (Python: SessionOptions.register_custom_ops_library(get_library_path())).
        "custom_ops": {"library": CUSTOM_OPS_PACKAGE, "version": custom_ops_version(),
                       "domain": CUSTOM_OPS_DOMAIN, "ops": [plan.op]},
        "tokenizer": {"kind": plan.kind, "max_length": plan.max_length,
                      "padding_side": "left" if plan.pad_left else "right", "pad_id": plan.pad_id},
        "ids_checked": checked,
    }


def _describe(v: Any) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": dims if t.HasField("shape") else None}
