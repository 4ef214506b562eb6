"""Causal language models: KV-cache export, generation over onnxruntime, decoder parity.

The encoder path lives in :mod:`edgeopt.pipeline`; decoders share its recipe, quantize
registry, gates, report and bundle, and add what a KV cache needs:

    export (one graph for prefill and decode) -> untie lm_head -> quantize -> validate
    (perplexity, greedy agreement) -> bench (prefill/decode tokens/s, peak RSS) -> bundle

Modules import torch and onnxruntime inside their functions, so importing this package
stays cheap.
"""
