"""The bundle writer every family uses: stage the folder beside the destination, write
model, tokenizer, report and manifest, rename into place. A failed gate keeps only the
report, so a broken model cannot be shipped by mistake."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgeopt.artifact import OnnxArtifact
from edgeopt.bundle import StagedBundle, write_manifest
from edgeopt.compiler.reporting import build_report
from edgeopt.compiler.stage import StageContext
from edgeopt.families import FEATURE_EXTRACTION
from edgeopt.report import Report
from edgeopt.report_data import REPORT_JSON, BundleReport
from edgeopt.runtime import fixed_input_shape
from edgeopt.version import __version__


def write_bundle(ctx: StageContext, model: OnnxArtifact, report: Report) -> None:
    """Write the bundle of ``ctx``'s compile; the model only when it may ship."""
    req = ctx.request
    keep_model = report.passed or not req.fail_on_parity
    stage = StagedBundle(req.out)
    try:
        if keep_model:
            shutil.copyfile(model.path, stage.path("model.onnx"))
            for name, path in ctx.bundle_files.items():
                shutil.copyfile(path, stage.path(name))
            ctx.tokenizer.save_pretrained(str(stage.dir))
            report.bundle = str(req.out)
        text, markdown = report.to_json(), report.to_markdown()
        stage.write_text(REPORT_JSON, text + "\n")
        stage.write_text("report.md", markdown)
        stage.write_text("report.html", _html(req.out, text, markdown))
        if keep_model:
            manifest = _manifest(ctx, stage.path("model.onnx"), report, ctx.tokenizer)
            manifest |= _app_contract(ctx, stage)
            write_manifest(stage, {**manifest, **ctx.manifest})
        stage.commit(req.force)
    except BaseException:
        stage.discard()
        raise


def _html(out: Path, report_json: str, markdown: str) -> str:
    import json

    from edgeopt.htmlreport import render_report

    # From the JSON text, as `edgeopt report` reads it back: one page for both paths.
    return render_report(BundleReport(Path(out).name, json.loads(report_json), markdown))


def _manifest(ctx: StageContext, model_path: Path, report: Report, tokenizer: Any) -> dict[str, Any]:
    import onnx

    req = ctx.request
    graph = onnx.load(str(model_path), load_external_data=False).graph
    max_len = getattr(tokenizer, "model_max_length", None)
    return {
        "edgeopt_version": __version__,
        "target": req.target,
        "task": req.src.task,
        "model": "model.onnx",
        "inputs": [_value_info(v) for v in graph.input],
        "outputs": [_value_info(v) for v in graph.output],
        "label_names": list(req.src.label_names) if req.src.label_names else None,
        "pooling": req.src.pooling,
        "normalized": req.src.normalize if req.src.task == FEATURE_EXTRACTION else None,
        "max_sequence_length": int(max_len) if isinstance(max_len, int) and max_len < 1e6 else None,
        "providers": list(req.recipe.providers),
        # Set when the graph takes one input shape only (NNAPI, QNN): pad every input to it.
        "fixed_input_shape": _fixed_shape_info(model_path),
        # Session settings the app must use for the measured speed (see the report).
        "session_options": {"disabled_optimizers": list(req.recipe.disabled_optimizers())},
        # Provider options the accelerator placement was measured with (QNN: the SoC, and
        # graph I/O quantization on HTP so that the graph runs whole without CPU fallback).
        "provider_options": _provider_options(req.recipe.providers),
        "parity": "passed" if report.passed else "failed",
        "source_weights_sha256": report.source["weights_sha256"],
        # The LoRA adapter merged into the source (edgeopt.lora), else null.
        "source_adapter": report.source.get("adapter"),
        "versions": report.versions,
        "recipe": report.recipe,
    }


def _app_contract(ctx: StageContext, stage: StagedBundle) -> dict[str, Any]:
    """What a runtime other than edgeopt's needs beyond the graph (onnxruntime-node, the
    Android example): which files hold the tokenizer and how to pad, and whether a node
    the first provider cannot run may fall back to the CPU."""
    tok = ctx.tokenizer
    names = [n for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
             if stage.path(n).is_file()]
    pad = getattr(tok, "pad_token_id", None)
    tokenizer = {"files": names, "pad_token_id": pad if isinstance(pad, int) else None,
                 "padding_side": getattr(tok, "padding_side", "right"),
                 "truncation_side": getattr(tok, "truncation_side", "right")} if names else None
    return {"tokenizer": tokenizer,
            # False: open the session with session.disable_cpu_ep_fallback=1, so a node the
            # accelerator drops fails the load instead of running slowly on the CPU.
            "cpu_ep_fallback": not ctx.request.recipe.preflight.require_one_graph}


def _provider_options(names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    from edgeopt.providers import get_provider

    chosen = [get_provider(n) for n in names]
    return {p.ep: dict(p.app_options) for p in chosen if p.app_options}


def _fixed_shape_info(model_path: Path) -> dict[str, int] | None:
    shape = fixed_input_shape(model_path)
    return None if shape is None else {"batch": shape[0], "sequence": shape[1]}


def _value_info(v: Any) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
    return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": dims}


def bundle(artifact: OnnxArtifact, _config: None, _workdir: Path, ctx: StageContext) -> OnnxArtifact:
    """The last stage of every family: build the report from the records, write it all."""
    report = build_report(ctx, artifact)
    write_bundle(ctx, artifact, report)
    ctx.report = report
    return artifact
