"""Turn a GGUF file into a plain Hugging Face checkpoint (safetensors + tokenizer).

transformers dequantizes GGUF tensors to float32 on load; re-saving through a fresh
model built from the config drops the GGUF quantization metadata, so the result loads
like any fine-tuned checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import ModelError


def gguf_to_hf(gguf_file: Path, dest: Path) -> None:
    """Write ``dest`` as a safetensors checkpoint of the model in ``gguf_file``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ModelError("reading GGUF needs the 'gguf' package: pip install 'edgeopt[gguf]'") from None
    folder, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.eval().save_pretrained(dest)
    tokenizer.save_pretrained(dest)
