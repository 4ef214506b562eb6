"""The in-place KV cache: buffers bound as both past and present give the same logits
as the concatenating calls and as a full recompute, grow when they run out, and can be
stepped again from an earlier state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeopt.decoder.generate import BufferCache, OnnxCausalLM

MODELS = ["tiny_llama_onnx", "tiny_gpt2_onnx"]


def _tokens(vocab: int, n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(1, vocab, size=n).tolist()


def _decode(lm: OnnxCausalLM, prompt: list[int], rest: list[int], **prefill) -> tuple[np.ndarray, object]:
    """Logits [len(rest) + 1, vocab]: after the prompt and after each following token."""
    logits, cache = lm.prefill(prompt, **prefill)
    rows = [logits]
    for token in rest:
        logits, cache = lm.step(token, cache)
        rows.append(logits)
    return np.stack(rows), cache


@pytest.mark.parametrize("fixture", MODELS)
def test_in_place_steps_equal_concat_steps_and_full_recompute(fixture, request):
    path, io, _ = request.getfixturevalue(fixture)
    in_place = OnnxCausalLM.from_file(path, io, threads=1)
    concat = OnnxCausalLM.from_file(path, dataclasses.replace(io, cache_in_place=False), threads=1)
    assert in_place.in_place and not concat.in_place
    tokens = _tokens(io.vocab_size, 20, seed=3)
    # Room for 8 positions: the cache has to grow (twice) along the way.
    ours, cache = _decode(in_place, tokens[:5], tokens[5:], capacity=8)
    assert isinstance(cache, BufferCache) and cache.length == 20 and cache.capacity == 32
    theirs, past = _decode(concat, tokens[:5], tokens[5:])
    assert isinstance(past, dict)
    full = concat.logits(np.asarray([tokens]))[0, 4:]
    np.testing.assert_allclose(ours, full, atol=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # The buffers hold the same cache as the concatenated presents, and nothing after it.
    for name, array in cache.arrays.items():
        np.testing.assert_allclose(array[:, :, :20], past[name], atol=1e-6)
        assert not array[:, :, 20:].any()


def test_a_step_writes_into_the_bound_buffer(tiny_llama_onnx):
    """The present is the past's own memory: a step fills one more position of the same
    arrays instead of returning new ones."""
    path, io, _ = tiny_llama_onnx
    lm = OnnxCausalLM.from_file(path, io, threads=1)
    _, cache = lm.prefill(_tokens(io.vocab_size, 6, seed=4), capacity=10)
    before = {name: array.copy() for name, array in cache.arrays.items()}
    _, after = lm.step(7, cache)
    assert after.arrays is cache.arrays and after.length == 7
    for name, array in after.arrays.items():
        assert array.shape == (1, io.num_kv_heads, 10, io.head_dim)
        np.testing.assert_array_equal(array[:, :, :6], before[name][:, :, :6])
        assert array[:, :, 6].any() and not before[name][:, :, 6].any()


def test_stepping_again_from_an_earlier_state_overwrites_what_followed(tiny_llama_onnx):
    """A benchmark repeat decodes from the prompt's state again: the second run matches
    a fresh one, whatever the first left in the buffers."""
    path, io, _ = tiny_llama_onnx
    lm = OnnxCausalLM.from_file(path, io, threads=1)
    prompt, first, second = (_tokens(io.vocab_size, n, seed) for n, seed in ((7, 5), (6, 6), (6, 7)))
    _, start = lm.prefill(prompt, capacity=16)

    def run(tokens: list[int]) -> np.ndarray:
        rows, state = [], start
        for token in tokens:
            logits, state = lm.step(token, state)
            rows.append(logits)
        return np.stack(rows)

    run(first)
    fresh, _ = _decode(lm, prompt, second, capacity=16)
    np.testing.assert_array_equal(run(second), fresh[1:])
