"""Worker for an edgeopt bundle, run through edgeopt's own decoder runtime.

    python benchmarks/peers/edgeopt_worker.py    (JSON lines on stdin/stdout, see wire.py)

``load {bundle, threads}`` opens the bundle as ``OnnxCausalLM.from_bundle`` does (manifest
hashes checked, its disabled optimizers honoured) but with spinning threads, as
edgeopt's own decoder benchmark times it. ``generate`` is the greedy loop of
``OnnxCausalLM.generate`` (prefill with room for every new token, then one step per
token) with the prefill/decode split timed; ``score`` runs each window without a cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scoring import score_windows
from wire import serve, timed_greedy


class EdgeoptWorker:
    def __init__(self) -> None:
        self.lm: Any = None

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        from edgeopt import heap
        from edgeopt.bundle import bundle_file, read_manifest
        from edgeopt.decoder.generate import OnnxCausalLM
        from edgeopt.decoder.io import DecoderIO
        from edgeopt.runtime import make_session

        heap.release_large_frees()  # as `edgeopt generate` does (edgeopt/heap.py)

        bundle = Path(req["bundle"])
        manifest = read_manifest(bundle)
        model = bundle_file(bundle, manifest["model"])
        disabled = (manifest.get("session_options") or {}).get("disabled_optimizers") or ()
        session = make_session(model, threads=req["threads"], spinning=True,
                               providers=manifest.get("providers") or ("CPUExecutionProvider",),
                               disabled_optimizers=disabled)
        heap.trim()
        self.lm = OnnxCausalLM(session, DecoderIO.from_dict(manifest["decoder"]))
        return {"file_bytes": model.stat().st_size, "runtime": _ort_version()}

    def generate(self, req: dict[str, Any]) -> dict[str, Any]:
        prompt, new_tokens = list(req["prompt"]), int(req["new_tokens"])
        state: dict[str, Any] = {}

        def first() -> int:
            logits, state["cache"] = self.lm.prefill(prompt, capacity=len(prompt) + new_tokens)
            return int(np.argmax(logits))

        def step(token: int) -> int:
            logits, state["cache"] = self.lm.step(token, state["cache"])
            return int(np.argmax(logits))

        return timed_greedy(first, step, new_tokens)

    def score(self, req: dict[str, Any]) -> dict[str, Any]:
        return score_windows(lambda ids: self.lm.logits(np.asarray([ids]))[0], req["windows"])


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


if __name__ == "__main__":
    w = EdgeoptWorker()
    serve({"load": w.load, "generate": w.generate, "score": w.score})
