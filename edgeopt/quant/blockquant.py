"""Symmetric block-wise weight quantization, the numbers MatMulNBits stores.

A weight ``W`` of shape ``[N, K]`` (output, input) is cut into blocks of ``block``
consecutive input columns; each (row, block) gets one float scale ``s`` and integer
codes ``q`` in ``[-2^(b-1), 2^(b-1) - 1]`` with ``W ~= q * s``. MatMulNBits stores
``q + 2^(b-1)`` unsigned (its implicit zero point), 4-bit codes two to a byte.

Three ways to choose ``q`` and ``s``:

- round to nearest with onnxruntime's scale (``signed absmax / -2^(b-1)``, so the
  largest magnitude lands on the grid's wide end): data-free, what MLAS computes;
- a scale search weighted by ``H = X^T X`` of the block's inputs on calibration data,
  which minimises the output error ``e^T H e`` rather than the weight error;
- GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for
  Generative Pre-trained Transformers") with the searched scales: columns are rounded
  one at a time, loudest inputs first, and each rounding error is pushed onto the
  columns not yet rounded through ``H^-1``.
"""

from __future__ import annotations

import numpy as np

# Clip ratios tried by the scale search: the block's absmax times each of these.
SEARCH_RATIOS = np.linspace(0.5, 1.0, 20)
# GPTQ's dampening: this fraction of the mean diagonal is added to H before inverting.
DAMP = 0.01


def padded(w: np.ndarray, block: int) -> np.ndarray:
    """``w`` [N, K] zero-padded on K to a multiple of ``block`` (MatMulNBits pads the same way)."""
    pad = (-w.shape[1]) % block
    return np.pad(w, ((0, 0), (0, pad))) if pad else w


def rtn_scales(blocks: np.ndarray, bits: int) -> np.ndarray:
    """onnxruntime's symmetric scale per block: the signed value of largest magnitude
    over ``-2^(b-1)``. ``blocks``: [N, nb, block] -> [N, nb, 1]."""
    hi, lo = blocks.max(-1, keepdims=True), blocks.min(-1, keepdims=True)
    extreme = np.where(np.abs(hi) > np.abs(lo), hi, lo)
    return extreme / -(2 ** (bits - 1))


def codes(blocks: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Round ``blocks`` to the grid of ``scales`` (zero scale: code 0)."""
    qmax = 2 ** (bits - 1)
    safe = np.where(scales == 0, 1.0, scales)
    q = np.clip(np.rint(blocks / safe), -qmax, qmax - 1)
    return np.where(scales == 0, 0.0, q)


def searched_scales(blocks: np.ndarray, hessians: np.ndarray, bits: int) -> np.ndarray:
    """Per block, the scale among ``SEARCH_RATIOS`` x absmax (either sign, so the wide
    end of the grid can sit on either side) with the least output error ``e^T H e``.
    ``blocks`` [N, nb, block], ``hessians`` [nb, block, block] -> [N, nb, 1]."""
    qmax = 2 ** (bits - 1)
    absmax = np.abs(blocks).max(-1, keepdims=True)
    best = rtn_scales(blocks, bits)
    best_err = _output_error(blocks, best, hessians, bits)
    for ratio in SEARCH_RATIOS:
        for sign in (1.0, -1.0):
            s = sign * absmax * ratio / qmax
            err = _output_error(blocks, s, hessians, bits)
            better = err < best_err
            best = np.where(better, s, best)
            best_err = np.where(better, err, best_err)
    return best


def _output_error(blocks: np.ndarray, scales: np.ndarray, hessians: np.ndarray,
                  bits: int) -> np.ndarray:
    e = codes(blocks, scales, bits) * scales - blocks
    return np.einsum("onb,nbc,onc->on", e, hessians, e, optimize=True)[..., None]


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, bits: int,
                  block: int) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ over the whole row with one scale per block: codes [N, nb, block], scales
    [N, nb, 1]. ``w`` [N, K], ``hessian`` [K, K] (``X^T X`` of the inputs, K padded).

    The scales are searched first, on the float weights. Columns are then rounded in
    order of decreasing ``H`` diagonal (GPTQ's act-order: the loudest inputs first,
    while the most columns remain to absorb their error), and each rounding error is
    pushed onto every column not yet rounded through the Cholesky factor of ``H^-1``.
    Fixing the scales up front ("static groups") keeps MatMulNBits' plain block layout
    although the sweep crosses blocks.
    """
    n, k = w.shape
    h = hessian.astype(np.float64).copy()
    w = w.astype(np.float64).copy()
    dead = np.diag(h) <= 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    n_blocks = k // block
    diagonal = np.stack([h[j * block:(j + 1) * block, j * block:(j + 1) * block]
                         for j in range(n_blocks)])
    scales = searched_scales(w.reshape(n, n_blocks, block), diagonal, bits)
    order = np.argsort(-np.diag(h), kind="stable")
    h = h[np.ix_(order, order)]
    w = w[:, order]
    col_scales = np.repeat(scales[..., 0], block, axis=1)[:, order]
    h += DAMP * np.diag(h).mean() * np.eye(k)
    # Upper Cholesky factor of H^-1: row i holds the update for the columns after i.
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros((n, k))
    for lo in range(0, k, block):
        hi = lo + block
        errors = np.zeros((n, block))
        for c in range(lo, hi):
            q[:, c] = codes(w[:, c], col_scales[:, c], bits)
            errors[:, c - lo] = (w[:, c] - q[:, c] * col_scales[:, c]) / u[c, c]
            w[:, c:hi] -= errors[:, c - lo, None] * u[None, c, c:hi]
        # This stretch's errors reach the later columns in one product.
        w[:, hi:] -= errors @ u[lo:hi, hi:]
    unordered = np.empty_like(q)
    unordered[:, order] = q
    return unordered.reshape(n, n_blocks, block), scales


def quantize_weight(w: np.ndarray, bits: int, block: int,
                    hessian: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes [N, nb, block] (int8) and scales [N, nb] (float32) for ``w`` [N, K]:
    round to nearest without ``hessian``; GPTQ on searched scales with it
    (``hessian`` [K, K], the inputs' ``X^T X``)."""
    n, k = w.shape
    w = padded(w.astype(np.float32), block)
    if hessian is None:
        blocks = w.reshape(n, -1, block)
        scales = rtn_scales(blocks, bits)
        q = codes(blocks, scales, bits)
    else:
        pad = w.shape[1] - k
        q, scales = gptq_quantize(w, np.pad(hessian, ((0, pad), (0, pad))), bits, block)
    return q.astype(np.int8), scales[..., 0].astype(np.float32)


def dequantize(q: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The weight [N, K] that codes ``q`` and ``scales`` stand for."""
    return (q.astype(np.float32) * scales[..., None]).reshape(q.shape[0], -1)[:, :k]


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' ``B``: unsigned codes [N, nb, block * bits / 8], 4-bit low nibble first."""
    u = (q.astype(np.int16) + 2 ** (bits - 1)).astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(u)
    return np.ascontiguousarray((u[..., 0::2] & 0x0F) | ((u[..., 1::2] & 0x0F) << 4))


def block_for(k: int, largest: int = 128) -> int:
    """The largest power-of-two block (16..``largest``) dividing ``k``, so no padding is
    stored; ``largest`` when none does."""
    return next((b for b in (128, 64, 32, 16) if b <= largest and k % b == 0), largest)
