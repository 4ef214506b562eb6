"""Causal language models: KV-cache export, generation over onnxruntime, decoder parity.

A sibling of :mod:`edgeopt.encoder` on the compile core (:mod:`edgeopt.compiler`): it
shares the recipe, quantize registry, gates, report and bundle writer, and adds what a
KV cache needs (:mod:`edgeopt.decoder.family` declares the stages):

    export (one graph for prefill and decode) -> untie lm_head -> quantize -> validate
    (perplexity, greedy agreement) -> bench (prefill/decode tokens/s, peak RSS) -> bundle

Modules import torch and onnxruntime inside their functions, so importing this package
stays cheap.
"""
