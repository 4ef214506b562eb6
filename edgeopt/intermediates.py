"""Run a reference and a candidate with their intermediate tensors exposed and measure,
for every tensor both compute, two errors:

- the error that reaches it (candidate run as is): SQNR, cosine, max abs error;
- the error its own node adds (candidate run with every compared tensor's readers fed
  the reference value): a node is judged on exact inputs, so a quantized MatMul after a
  noisy one is not blamed for the noise it receives.

Pairings: ONNX vs ONNX (onnxruntime's dynamic and QDQ quantizers keep the float name of
every tensor they replace; static QOperator graphs keep tensors quantized between nodes,
so only their outputs compare) and PyTorch vs ONNX (module outputs matched to export
scopes by :mod:`edgeopt.tensormap`). :mod:`edgeopt.diagnose` picks models and inputs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.diagnosis import Compared, Diagnosis, ErrorStats, build_diagnosis, layer_of
from edgeopt.probe import FLOAT_TYPES, NUMPY_TYPES, REFERENCE, declared_feeds, probe_session
from edgeopt.tensormap import graph_of, hookable_modules, match_modules, segment_op, upstream


class _Candidate:
    """The candidate graph, run as is and isolated (see the module docstring)."""

    def __init__(self, model: Any, alias: dict[str, str], workdir: Path) -> None:
        self.model, self.alias, self.workdir = model, alias, workdir
        self.session = probe_session(model, alias.values(), save_to=workdir / "candidate.onnx")
        self.types = {o.name: o.type for o in self.session.get_outputs()}
        self.isolated: Any = None  # built on the first batch; False when it cannot run
        self.fed: list[str] = []
        self.notes: list[str] = []

    def floats(self) -> set[str]:
        return {t for t, c in self.alias.items() if self.types.get(c) in FLOAT_TYPES}

    def run(self, names: list[str], feed: dict[str, np.ndarray],
            reference: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        outs = [self.alias[t] for t in names]
        plain = self.session.run(outs, declared_feeds(self.session, feed))
        if self.isolated is None:
            # Only tensors whose shapes agree can stand in for the candidate's own.
            self.fed = [t for t, p in zip(names, plain, strict=True) if t in reference
                        and reference[t].shape == p.shape]
            try:
                self.isolated = probe_session(
                    self.model, self.alias.values(), save_to=self.workdir / "isolated.onnx",
                    fed={self.alias[t]: NUMPY_TYPES[self.types[self.alias[t]]] for t in self.fed})
            except Exception as err:  # onnxruntime's errors share no base below Exception
                # The own error is extra insight; the end-to-end numbers stand without it.
                self.isolated = False
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                self.notes.append(f"own error not measured: onnxruntime could not build the "
                                  f"isolated graph ({first[:200]})")
        if self.isolated is False or any(reference[t].shape != p.shape for t, p in
                                         zip(names, plain, strict=True) if t in self.fed):
            return plain, None
        refs = {self.alias[t] + REFERENCE: reference[t] for t in self.fed}
        return plain, self.isolated.run(outs, declared_feeds(self.isolated, {**feed, **refs}))


def diagnose_onnx(
    reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]], jump_db: float = 6.0
) -> Diagnosis:
    """Compare every float tensor both graphs produce, batch by batch."""
    import onnx

    started = time.perf_counter()
    ref_m, cand_m = onnx.load(str(reference)), onnx.load(str(candidate))
    ref_g, cand_g = graph_of(ref_m), graph_of(cand_m)
    shared = [t for n in ref_g.nodes for t in n.output if t in ref_g.live and t in cand_g.producer]
    with tempfile.TemporaryDirectory(prefix="edgeopt-diagnose-") as tmp:
        ref_s = probe_session(ref_m, shared, save_to=Path(tmp) / "reference.onnx")
        cand = _Candidate(cand_m, {t: cand_g.dequantized(t) for t in shared}, Path(tmp))
        ref_floats = {o.name for o in ref_s.get_outputs() if o.type in FLOAT_TYPES}
        names = [t for t in shared if t in ref_floats and t in cand.floats()]
        stats = {t: ErrorStats() for t in names}
        own = {t: ErrorStats() for t in names}
        for feed in feeds:
            ref_out = dict(zip(names, ref_s.run(names, declared_feeds(ref_s, feed)), strict=True))
            _accumulate(names, ref_out, *cand.run(names, feed, ref_out), stats, own)
    compared = set(names)
    inputs = upstream(ref_g, compared)
    items = []
    for t in names:
        node = ref_g.nodes[ref_g.producer[t]]
        items.append(Compared(
            tensor=t, node=node.name or t, op=node.op_type,
            cand_op=segment_op(cand_g, t, compared, like=node.op_type),
            layer=layer_of(t) if layer_of(t) is not None else layer_of(node.name),
            order=ref_g.producer[t], inputs=inputs.get(t, ()), is_output=t in ref_g.outputs))
    return build_diagnosis(
        items, stats, own, reference=str(reference), candidate=str(candidate),
        rows=sum(_rows(f) for f in feeds), source="given inputs", jump_db=jump_db,
        notes=cand.notes, seconds=time.perf_counter() - started)


def diagnose_torch_vs_onnx(
    module: Any, onnx_path: Path, feeds: list[dict[str, np.ndarray]], input_names: list[str],
    jump_db: float = 6.0,
) -> Diagnosis:
    """Compare PyTorch module outputs with the ONNX tensors their export scope produced.

    ``module`` is the export wrapper (its submodule paths are the export scopes) and is
    called with ``feeds[name] for name in input_names``.
    """
    import onnx
    import torch

    started = time.perf_counter()
    model = onnx.load(str(onnx_path))
    g = graph_of(model)
    modules = hookable_modules(module)
    matches, missing = match_modules(modules, g)
    final = g.outputs[0]
    by_tensor = {m.tensor: m for m in matches}
    names = list(by_tensor) + ([] if final in by_tensor else [final])
    captured: dict[str, np.ndarray] = {}

    def hook(path: str) -> Any:
        def capture(_mod: Any, _args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            captured[path] = out.detach().float().numpy()
        return capture

    handles = [modules[m.path].register_forward_hook(hook(m.path)) for m in matches]
    try:
        with tempfile.TemporaryDirectory(prefix="edgeopt-diagnose-") as tmp:
            cand = _Candidate(model, {t: g.dequantized(t) for t in names}, Path(tmp))
            names = [t for t in names if t in cand.floats()]
            stats = {t: ErrorStats() for t in names}
            own = {t: ErrorStats() for t in names}
            for feed in feeds:
                captured.clear()
                with torch.inference_mode():
                    out = module(*(torch.from_numpy(feed[n]) for n in input_names))
                ref = {final: out.float().numpy()}
                for m in matches:
                    if m.path in captured:
                        value = captured[m.path]
                        ref[m.tensor] = value - m.bias if m.bias is not None else value
                present = [t for t in names if t in ref]  # a module may not run every time
                _accumulate(present, ref, *cand.run(present, feed, ref), stats, own)
    finally:
        for h in handles:
            h.remove()
    compared = set(names)
    inputs = upstream(g, compared)
    items = []
    for t in names:
        m = by_tensor.get(t)
        items.append(Compared(
            tensor=t, node=m.path if m else "output", op=m.kind if m else "output",
            cand_op=segment_op(g, t, compared, like=m.export_op if m else ""),
            layer=layer_of(m.path) if m else None, order=g.producer[t],
            inputs=inputs.get(t, ()), is_output=t == final))
    return build_diagnosis(
        items, stats, own, reference="PyTorch", candidate=str(onnx_path),
        rows=sum(_rows(f) for f in feeds), source="given inputs", jump_db=jump_db,
        coverage=_coverage(modules, [m.kind for m in matches]), notes=cand.notes + _missing_note(missing),
        seconds=time.perf_counter() - started)


def _accumulate(names: list[str], ref: dict[str, np.ndarray], plain: list[np.ndarray],
                isolated: list[np.ndarray] | None, stats: dict[str, ErrorStats],
                own: dict[str, ErrorStats]) -> None:
    for i, t in enumerate(names):
        stats[t].add(ref[t], plain[i])
        if isolated is not None:
            own[t].add(ref[t], isolated[i])


def _rows(feed: dict[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0]) if feed else 0


def _coverage(modules: dict[str, Any], matched: list[str]) -> str:
    total: dict[str, int] = {}
    for mod in modules.values():
        total[type(mod).__name__] = total.get(type(mod).__name__, 0) + 1
    kinds = ", ".join(f"{k} {matched.count(k)}/{n}" for k, n in total.items())
    return f"{len(matched)} of {len(modules)} PyTorch modules matched: {kinds}"


def _missing_note(missing: list[str]) -> list[str]:
    if not missing:
        return []
    shown = ", ".join(f"`{p}`" for p in missing[:6]) + (", ..." if len(missing) > 6 else "")
    return [f"{len(missing)} modules have no tensor of their own in the graph (fused away or "
            f"renamed): {shown}"]
