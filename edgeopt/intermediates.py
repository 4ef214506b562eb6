"""Run two models with their intermediate tensors exposed and accumulate the error of
every tensor pair; :mod:`edgeopt.diagnose` picks the pairing and the inputs.

Two pairings:

- ONNX vs ONNX (float vs quantized, plain vs fused): onnxruntime's dynamic (QOperator)
  and QDQ quantizers keep the float name of every tensor they replace, so every float
  tensor both graphs produce is compared. Static QOperator graphs keep tensors
  quantized between nodes (``*_quantized``); only their outputs compare.
- PyTorch vs ONNX: forward hooks on leaf modules, each matched to the last tensor of
  its TorchScript export scope ('model.bert.encoder.layer.0.attention.self.query' ->
  '/model/bert/encoder/layer.0/attention/self/query/...').
"""

from __future__ import annotations

import hashlib
import heapq
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.diagnosis import Compared, Diagnosis, ErrorStats, build_diagnosis, layer_of
from edgeopt.errors import UsageError
from edgeopt.runtime import make_session

_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16}
# Quantization plumbing: never the op that names what a candidate node does.
_PLUMBING = {"Cast", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}
# Names the TorchScript exporter gives: '<scope>/<Op>[_N]' nodes, '<node>_output_N' tensors.
_EXPORT_NODE = re.compile(r"^(/.+/)([A-Za-z]+)(?:_\d+)?$")
_EXPORT_TENSOR = re.compile(r"^(/.+/)([A-Za-z]+)(?:_\d+)?_output_\d+$")


# -- graph structure ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Graph:
    """An ONNX graph's nodes in topological order and who produces what."""

    nodes: tuple[Any, ...]
    producer: dict[str, int]  # tensor -> index in nodes
    consumers: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]
    live: frozenset[str]  # node outputs computed from a graph input (not constants)

    def dequantized(self, tensor: str) -> str:
        """The tensor a QDQ graph passes on in place of ``tensor`` (its QuantizeLinear ->
        DequantizeLinear output), else ``tensor``. QDQ quantizers may drop a Relu and let
        the quantization range clip instead, so only the dequantized value means the same."""
        users = [self.nodes[k] for k in self.consumers.get(tensor, ())]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            return tensor
        after = [self.nodes[k] for k in self.consumers.get(users[0].output[0], ())]
        if after and all(n.op_type == "DequantizeLinear" for n in after):
            return after[0].output[0]
        return tensor


def _graph(model: Any) -> _Graph:
    g = model.graph
    made = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    deps = [{made[x] for x in n.input if x in made} for n in g.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)  # file order among ready nodes: stable, usually the identity
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    nodes = tuple(g.node[i] for i in order)
    live = {i.name for i in g.input}
    for n in nodes:
        if any(x in live for x in n.input):
            live.update(o for o in n.output if o)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(nodes):
        for x in dict.fromkeys(n.input):
            consumers.setdefault(x, []).append(k)
    return _Graph(nodes, producer, {t: tuple(ks) for t, ks in consumers.items()},
                  tuple(o.name for o in g.output), frozenset(live - {i.name for i in g.input}))


def _upstream(g: _Graph, compared: set[str]) -> dict[str, tuple[str, ...]]:
    """For each compared tensor, the nearest compared tensors its node reads from."""
    frontier: dict[str, frozenset[str]] = {}
    result: dict[str, tuple[str, ...]] = {}
    for node in g.nodes:
        up = frozenset().union(*(frontier.get(x, frozenset()) for x in node.input if x))
        for o in node.output:
            if o in compared:
                result[o] = tuple(sorted(up))
                frontier[o] = frozenset((o,))
            elif o:
                frontier[o] = up
    return result


def _segment(g: _Graph, tensor: str, stop: set[str]) -> list[int]:
    """The nodes that compute ``tensor`` from the nearest compared tensors upstream."""
    seen, stack = set(), [g.producer[tensor]]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        stack += [g.producer[x] for x in g.nodes[k].input
                  if x and x not in stop and x in g.producer and x in g.live]
    return sorted(seen)


def _segment_op(g: _Graph, tensor: str, segment: list[int], like: str = "") -> str:
    """A name for what a segment does: the op of the same family as ``like`` (a quantized
    graph computes MatMul with MatMulInteger, Cast and Mul), else the producer's op."""
    types = [g.nodes[k].op_type for k in segment]
    low = like.lower()
    family = [t for t in types if low and t not in _PLUMBING and low in t.lower()]
    op = family[-1] if family else g.nodes[g.producer[tensor]].op_type
    return op + " (QDQ)" if "DequantizeLinear" in types else op


class _Weights:
    """Digests of a model's initializers, computed on first use."""

    def __init__(self, model: Any) -> None:
        self._protos = {i.name: i for i in model.graph.initializer}
        self._digests: dict[str, str] = {}

    def of(self, g: _Graph, segment: list[int]) -> set[tuple[str, str]]:
        names = {x for k in segment for x in g.nodes[k].input if x in self._protos}
        from onnx import numpy_helper

        for n in names - self._digests.keys():
            # Values, not protos: quantizers re-serialize untouched tensors differently.
            a = numpy_helper.to_array(self._protos[n])
            self._digests[n] = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()
        return {(n, self._digests[n]) for n in names}


def _changed(ref: tuple[_Graph, list[int], _Weights], cand: tuple[_Graph, list[int], _Weights]) -> bool:
    """Whether the candidate computes a tensor differently: other ops or other weights.
    A node computed the same way only passes on the error it receives."""
    (rg, rs, rw), (cg, cs, cw) = ref, cand
    return (sorted(rg.nodes[k].op_type for k in rs) != sorted(cg.nodes[k].op_type for k in cs)
            or rw.of(rg, rs) != cw.of(cg, cs))


# -- running ----------------------------------------------------------------------------------
def _exposed_session(model: Any, names: Iterable[str], out: Path) -> Any:
    """A session on ``model`` saved to ``out`` with ``names`` added as graph outputs.

    Outputs are added untyped: onnxruntime infers their types (contrib ops included,
    where ONNX shape inference gives up). Optimization stays at 'basic' so fusions do
    not change what a compared tensor means; fusions never remove a graph output.
    """
    import onnx

    model, original = onnx.ModelProto(), model
    model.CopyFrom(original)  # saving moves the weights out of the proto; keep the caller's
    have = {o.name for o in model.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    onnx.save(model, str(out), save_as_external_data=True, location=out.name + ".data")
    return make_session(out, optimization="basic")


def _float_outputs(session: Any) -> set[str]:
    return {o.name for o in session.get_outputs() if o.type in _FLOAT_TYPES}


def _declared(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs the graph declares, in its types; a missing one is a usage error."""
    out = {}
    for i in session.get_inputs():
        if i.name not in feeds:
            raise UsageError(f"the graph needs input {i.name!r}, which the tokenizer does not "
                             "produce; pass the tokenizer the model was compiled with")
        dtype = _NUMPY_TYPES.get(i.type)
        out[i.name] = feeds[i.name] if dtype is None else feeds[i.name].astype(dtype, copy=False)
    return out


def diagnose_onnx(
    reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]], jump_db: float = 6.0
) -> Diagnosis:
    """Compare every float tensor both graphs produce, batch by batch."""
    import onnx

    started = time.perf_counter()
    ref_m, cand_m = onnx.load(str(reference)), onnx.load(str(candidate))
    ref_g, cand_g = _graph(ref_m), _graph(cand_m)
    ref_w, cand_w = _Weights(ref_m), _Weights(cand_m)
    shared = [t for n in ref_g.nodes for t in n.output
              if t in ref_g.live and t in cand_g.producer]
    alias = {t: cand_g.dequantized(t) for t in shared}
    with tempfile.TemporaryDirectory(prefix="edgeopt-diagnose-") as tmp:
        ref_s = _exposed_session(ref_m, shared, Path(tmp) / "reference.onnx")
        cand_s = _exposed_session(cand_m, alias.values(), Path(tmp) / "candidate.onnx")
        cand_floats = _float_outputs(cand_s)
        names = [t for t in shared if t in _float_outputs(ref_s) and alias[t] in cand_floats]
        stats = {t: ErrorStats() for t in names}
        for feed in feeds:
            ref_out = ref_s.run(names, _declared(ref_s, feed))
            cand_out = cand_s.run([alias[t] for t in names], _declared(cand_s, feed))
            for t, r, c in zip(names, ref_out, cand_out, strict=True):
                stats[t].add(r, c)
    compared = set(names)
    upstream = _upstream(ref_g, compared)
    items = []
    for t in names:
        node = ref_g.nodes[ref_g.producer[t]]
        ref_seg, cand_seg = _segment(ref_g, t, compared), _segment(cand_g, t, compared)
        items.append(Compared(
            tensor=t, node=node.name or t, op=node.op_type,
            cand_op=_segment_op(cand_g, t, cand_seg, like=node.op_type),
            layer=layer_of(t) if layer_of(t) is not None else layer_of(node.name),
            order=ref_g.producer[t], inputs=upstream.get(t, ()), is_output=t in ref_g.outputs,
            changed=_changed((ref_g, ref_seg, ref_w), (cand_g, cand_seg, cand_w))))
    return build_diagnosis(
        items, stats, reference=str(reference), candidate=str(candidate),
        rows=sum(_rows(f) for f in feeds), source="given inputs", jump_db=jump_db,
        seconds=time.perf_counter() - started)


def _rows(feed: dict[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0]) if feed else 0


@dataclass(frozen=True)
class _Match:
    """A PyTorch module and the ONNX tensor that holds its output."""

    path: str
    kind: str
    tensor: str
    bias: np.ndarray | None  # subtract from the module output: the graph fused it away


def _hookable(module: Any) -> dict[str, Any]:
    """Leaf modules worth comparing: Linear, LayerNorm, Embedding, activations, and the
    self-attention core (where softmax and masking happen)."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding)
    out = {}
    for path, mod in module.named_modules():
        leaf = not any(True for _ in mod.children())
        activation = type(mod).__module__ in ("torch.nn.modules.activation", "transformers.activations")
        if (leaf and (isinstance(mod, kinds) or activation)) or type(mod).__name__.endswith(
                "SelfAttention"):
            out[path] = mod
    return out


def _scope_tensors(g: _Graph) -> dict[str, tuple[str, str]]:
    """Export scope ('/model/bert/.../query/') -> (last tensor in it, the export op that
    made it). Quantizer-made nodes ('MatMul_quant', '..._QuantizeLinear') don't count."""
    found: dict[str, tuple[str, str]] = {}
    for node in g.nodes:
        named = []
        if node.output and node.output[0] and (m := _EXPORT_NODE.match(node.name)):
            named.append((m.group(1), node.output[0], m.group(2)))
        named += [(m.group(1), o, m.group(2)) for o in node.output if (m := _EXPORT_TENSOR.match(o))]
        for scope, tensor, op in named:
            parts = scope.strip("/").split("/")
            if tensor not in g.live:
                continue
            for k in range(1, len(parts) + 1):
                found["/" + "/".join(parts[:k]) + "/"] = (tensor, op)
    return found


def _scope(path: str) -> str:
    """Module path -> export scope: 'model.encoder.layer.0.attn' -> '/model/encoder/layer.0/attn/'."""
    parts: list[str] = []
    for seg in path.split("."):
        if seg.isdigit() and parts:
            parts[-1] += "." + seg
        else:
            parts.append(seg)
    return "/" + "/".join(parts) + "/"


def _match_modules(hookable: dict[str, Any], g: _Graph) -> tuple[list[_Match], list[str]]:
    import torch

    scopes = _scope_tensors(g)
    matches, missing, taken = [], [], set()
    for path, mod in hookable.items():
        hit = scopes.get(_scope(path))
        if hit is None or hit[0] in taken:
            missing.append(path)
            continue
        tensor, op = hit
        bias = None
        if isinstance(mod, torch.nn.Linear) and op == "MatMul" and mod.bias is not None:
            bias = mod.bias.detach().float().numpy()  # the bias Add went into a fused op
        taken.add(tensor)
        matches.append(_Match(path, type(mod).__name__, tensor, bias))
    return matches, missing


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
    g = _graph(onnx.load(str(onnx_path), load_external_data=False))
    hookable = _hookable(module)
    matches, missing = _match_modules(hookable, g)
    final = g.outputs[0]
    names = [m.tensor for m in matches] + ([final] if final not in {m.tensor for m in matches} else [])
    captured: dict[str, np.ndarray] = {}

    def hook(path: str) -> Any:
        def capture(_mod: Any, _args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            captured[path] = out.detach().float().numpy()
        return capture

    handles = [hookable[m.path].register_forward_hook(hook(m.path)) for m in matches]
    stats = {t: ErrorStats() for t in names}
    try:
        with tempfile.TemporaryDirectory(prefix="edgeopt-diagnose-") as tmp:
            session = _exposed_session(onnx.load(str(onnx_path)), names, Path(tmp) / "model.onnx")
            floats = _float_outputs(session)
            names = [t for t in names if t in floats]
            for feed in feeds:
                captured.clear()
                with torch.inference_mode():
                    out = module(*(torch.from_numpy(feed[n]) for n in input_names))
                got = dict(zip(names, session.run(names, _declared(session, feed)), strict=True))
                for m in matches:
                    if m.tensor in got and m.path in captured:
                        ref = captured[m.path] - m.bias if m.bias is not None else captured[m.path]
                        stats[m.tensor].add(ref, got[m.tensor])
                if final in got and final not in {m.tensor for m in matches}:
                    stats[final].add(out.float().numpy(), got[final])
    finally:
        for h in handles:
            h.remove()
    compared = set(names)
    upstream = _upstream(g, compared)
    items = [Compared(tensor=m.tensor, node=m.path, op=m.kind,
                      cand_op=_segment_op(g, m.tensor, _segment(g, m.tensor, compared),
                                          _export_op(m.tensor)),
                      layer=layer_of(m.path), order=g.producer[m.tensor],
                      inputs=upstream.get(m.tensor, ()), is_output=m.tensor == final)
             for m in matches if m.tensor in compared]
    if final in compared and final not in {m.tensor for m in matches}:
        items.append(Compared(final, "output", "output", g.nodes[g.producer[final]].op_type,
                              None, g.producer[final], upstream.get(final, ()), True))
    return build_diagnosis(
        items, stats, reference="PyTorch", candidate=str(onnx_path),
        rows=sum(_rows(f) for f in feeds), source="given inputs", jump_db=jump_db,
        coverage=_coverage(hookable, matches), notes=_missing_note(missing),
        seconds=time.perf_counter() - started)


def _export_op(tensor: str) -> str:
    m = _EXPORT_TENSOR.match(tensor)
    return m.group(2) if m else ""


def _coverage(hookable: dict[str, Any], matches: list[_Match]) -> str:
    total: dict[str, int] = {}
    for mod in hookable.values():
        total[type(mod).__name__] = total.get(type(mod).__name__, 0) + 1
    hit: dict[str, int] = {}
    for m in matches:
        hit[m.kind] = hit.get(m.kind, 0) + 1
    kinds = ", ".join(f"{k} {hit.get(k, 0)}/{n}" for k, n in total.items())
    return f"{len(matches)} of {len(hookable)} PyTorch modules matched: {kinds}"


def _missing_note(missing: list[str]) -> list[str]:
    if not missing:
        return []
    shown = ", ".join(f"`{p}`" for p in missing[:6]) + (", ..." if len(missing) > 6 else "")
    return [f"{len(missing)} modules have no tensor of their own in the graph (fused away or "
            f"renamed): {shown}"]
