"""Worker for an onnxruntime-genai model (run with ``.venv-peers/bin/python``).

    .venv-peers/bin/python benchmarks/peers/genai_worker.py    (JSON lines, see wire.py)

``load {model_dir, threads}`` opens the model builder's folder on the CPU provider with
the intra-op thread count overlaid on its genai_config.json. ``generate`` is genai's
own greedy loop; ``score`` appends a window to a fresh generator and reads the logits
of every position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scoring import score_windows
from wire import serve, timed_greedy


class GenaiWorker:
    def __init__(self) -> None:
        self.model: Any = None

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        import onnxruntime_genai as og

        config = og.Config(req["model_dir"])
        config.clear_providers()  # the CPU provider
        threads = {"intra_op_num_threads": req["threads"], "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": threads}}}))
        self.model = og.Model(config)
        files = sum(p.stat().st_size for p in Path(req["model_dir"]).glob("model.onnx*"))
        return {"file_bytes": files, "runtime": f"onnxruntime-genai {og.__version__}"}

    def _generator(self, length: int, min_length: int = 0) -> Any:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=length, min_length=min_length, do_sample=False,
                                  num_beams=1, repetition_penalty=1.0)
        return og.Generator(self.model, params)

    def generate(self, req: dict[str, Any]) -> dict[str, Any]:
        prompt, new_tokens = list(req["prompt"]), int(req["new_tokens"])
        # min_length = max_length: genai masks end-of-sequence until then, so every
        # run decodes exactly new_tokens like the other runtimes.
        total = len(prompt) + new_tokens
        gen = self._generator(total, total)

        def first() -> int:
            gen.append_tokens(prompt)
            gen.generate_next_token()
            return int(gen.get_next_tokens()[0])

        def step(_token: int) -> int:
            # genai feeds its own last pick; the loop only reads it back.
            gen.generate_next_token()
            return int(gen.get_next_tokens()[0])

        return timed_greedy(first, step, new_tokens)

    def score(self, req: dict[str, Any]) -> dict[str, Any]:
        def logits_of(ids: list[int]) -> np.ndarray:
            gen = self._generator(len(ids) + 1)
            gen.append_tokens(ids)
            return np.asarray(gen.get_output("logits"))[0]  # [T, vocab]: every position

        return score_windows(logits_of, req["windows"])


if __name__ == "__main__":
    w = GenaiWorker()
    serve({"load": w.load, "generate": w.generate, "score": w.score})
