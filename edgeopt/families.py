"""What edgeopt compiles, declared once: the task names and the model types of each
family. Nothing here imports a heavy library; every other module names tasks and model
types through these constants.
"""

from __future__ import annotations

TEXT_CLASSIFICATION = "text-classification"
FEATURE_EXTRACTION = "feature-extraction"
TOKEN_CLASSIFICATION = "token-classification"
TEXT_GENERATION = "text-generation"

# Encoder tasks: tokenizer inputs in, one float output per row (or per token).
ENCODER_TASK_NAMES = (TEXT_CLASSIFICATION, FEATURE_EXTRACTION, TOKEN_CLASSIFICATION)
# Decoder tasks: a KV cache in and out, judged on plain text.
DECODER_TASK_NAMES = (TEXT_GENERATION,)
TASKS = ENCODER_TASK_NAMES + DECODER_TASK_NAMES

# Model types (config.json ``model_type``) each family has adapters for.
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "deberta-v2",
                 "modernbert", "albert")
DECODER_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gpt2")


def is_decoder_task(task: str) -> bool:
    """Whether ``task`` is compiled by the decoder family."""
    return task in DECODER_TASK_NAMES


def model_types_for(task: str) -> tuple[str, ...]:
    """The model types the family compiling ``task`` supports."""
    return DECODER_TYPES if is_decoder_task(task) else ENCODER_TYPES
