"""Decoder parity: the compiled graph against the original PyTorch model, on plain text.

Metrics (gated through :func:`edgeopt.validate.check_gates`):

- ``perplexity`` / ``perplexity_reference`` / ``perplexity_ratio``: over the first
  ``max_tokens`` tokens of the text in non-overlapping ``window``-token windows, both
  models scored on the same windows.
- ``token_agreement``: teacher-forced; the original's greedy continuation of each prompt
  is fed to the bundle, whose argmax must name the same next token at every step. The
  prompts open paragraphs inside the scored tokens, so calibration never sees them.
- ``first_divergence_mean`` / ``_min``: free-running greedy of the bundle against
  transformers' ``generate``: how many tokens match before the first difference.
- ``prefill_cosine_min`` / ``_p01`` / ``_mean``: the per-position cosine of the logits
  over every window and teacher-forced sequence: lowest, 1st percentile and mean (the
  lowest of ~17,000 positions is one position; the other two say how typical it is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeopt.decoder.evaltext import parity_text, prompts_from_text, token_windows
from edgeopt.decoder.generate import OnnxCausalLM
from edgeopt.decoder.reference import TorchCausalLM, torch_threads
from edgeopt.errors import UsageError
from edgeopt.gates import ParityResult, check_gates
from edgeopt.metrics import row_cosine
from edgeopt.recipe import Gates


@dataclass(frozen=True)
class DecoderEvalConfig:
    """How much text decoder parity reads; the defaults take ~3 min for a 135M model."""

    max_tokens: int = 16384
    window: int = 512
    prompts: int = 16
    new_tokens: int = 32
    threads: int = 2

    def __post_init__(self) -> None:
        if self.max_tokens < 2 or self.window < 2:
            raise UsageError("decoder eval needs max_tokens >= 2 and window >= 2")
        if self.prompts < 1 or self.new_tokens < 1 or self.threads < 1:
            raise UsageError("decoder eval needs prompts, new_tokens and threads >= 1")


def validate_decoder(candidate: OnnxCausalLM, reference: TorchCausalLM, tokenizer: object,
                     text: str, source: str, gates: Gates,
                     config: DecoderEvalConfig | None = None) -> ParityResult:
    """Score ``candidate`` against ``reference`` on ``text`` and check ``gates``."""
    config = config or DecoderEvalConfig()
    limit = candidate.io.max_positions or config.window
    windows = token_windows(tokenizer, text, config.max_tokens, min(config.window, limit))
    # Prompts from the scored lines only: the text after them is calibration's, then held out.
    prompt_text = parity_text(tokenizer, text, config.max_tokens)
    prompts = [tokenizer(p)["input_ids"] for p in prompts_from_text(prompt_text, config.prompts)]
    keep = max(limit - config.new_tokens, 1)  # prompt + continuation must fit the positions
    prompts = [p[-keep:] for p in prompts if p]
    nll_ref = nll_cand = 0.0
    cosines: list[np.ndarray] = []
    agree = total = 0
    divergence = []
    with torch_threads(config.threads):
        for row in windows:
            ref, cand = reference.logits(row[None])[0], candidate.logits(row[None])[0]
            nll_ref += _nll(ref, row)
            nll_cand += _nll(cand, row)
            cosines.append(row_cosine(ref, cand))
        for prompt in prompts:
            expected = reference.generate(prompt, config.new_tokens, stop_at_eos=False)
            seq = np.asarray([prompt + expected[:-1]], dtype=np.int64)
            ref, cand = reference.logits(seq)[0], candidate.logits(seq)[0]
            cosines.append(row_cosine(ref, cand))
            predicted = cand[len(prompt) - 1:].argmax(-1)
            agree += int((predicted == np.asarray(expected)).sum())
            total += len(expected)
            free = candidate.generate(prompt, config.new_tokens, stop_at_eos=False)
            divergence.append(_common_prefix(free, expected))
    scored = windows.size - len(windows)  # the first token of a window has no prediction
    ppl_ref, ppl = float(np.exp(nll_ref / scored)), float(np.exp(nll_cand / scored))
    cos = np.concatenate(cosines)
    metrics = {
        "perplexity_reference": ppl_ref,
        "perplexity": ppl,
        "perplexity_ratio": ppl / ppl_ref,
        "token_agreement": agree / total,
        "first_divergence_mean": float(np.mean(divergence)),
        "first_divergence_min": float(np.min(divergence)),
        "prefill_cosine_min": float(cos.min()),
        "prefill_cosine_p01": float(np.percentile(cos, 1)),
        "prefill_cosine_mean": float(cos.mean()),
    }
    described = (f"{source}: {windows.size} tokens in {len(windows)} windows of "
                 f"{windows.shape[1]}; {len(prompts)} prompts x {config.new_tokens} greedy tokens")
    return ParityResult(len(windows), described, metrics, check_gates(metrics, gates))


def _nll(logits: np.ndarray, ids: np.ndarray) -> float:
    """Summed negative log-likelihood of ``ids[1:]`` under ``logits[:-1]``, in float64."""
    x = logits[:-1].astype(np.float64)
    peak = x.max(-1)
    lse = peak + np.log(np.exp(x - peak[:, None]).sum(-1))
    return float((lse - x[np.arange(len(x)), ids[1:]]).sum())


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
