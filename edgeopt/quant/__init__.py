"""Quantizers and their internals, apart from the stage plumbing.

:mod:`~edgeopt.quant.registry` maps each config type to its quantizer; one module per
method (:mod:`~edgeopt.quant.dynamic`, :mod:`~edgeopt.quant.static`,
:mod:`~edgeopt.quant.int4`) and the pieces they share (block quantization, GPTQ scale
search, activation smoothing, the outlier split, calibration statistics).
:mod:`~edgeopt.quant.plan` holds the static plan types that execution providers'
rules build on; nothing here imports a provider.
"""
