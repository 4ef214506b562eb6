"""An ONNX model as the source of a compile: an ``.onnx`` file (its folder holds the
tokenizer), or a folder holding one ``.onnx`` plus tokenizer files. Export is skipped and
the float graph is the parity reference; the rest of the pipeline runs as for a model
folder.

Only the graph's inputs and outputs are read here (no weights, no torch): the task comes
from ``--task``, else the folder's ``config.json``, else the output's name and rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeopt.errors import ModelError
from edgeopt.families import (
    ENCODER_TASK_NAMES,
    FEATURE_EXTRACTION,
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model",
                    "spm.model", "vocab.json")
# Output names exporters give embeddings (edgeopt, optimum, sentence-transformers).
_EMBEDDING_OUTPUTS = ("sentence_embedding", "sentence_embeddings", "embeddings", "pooler_output",
                      "last_hidden_state", "token_embeddings")


def find_onnx(path: Path) -> Path | None:
    """The ``.onnx`` file ``path`` names or a model folder holds alone (no safetensors
    beside it), else None: the path is a model folder or nothing edgeopt reads."""
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return None
    found = sorted(path.glob("*.onnx"))
    if len(found) > 1:
        raise ModelError(f"{path} holds {len(found)} .onnx files ({', '.join(p.name for p in found)});"
                         " pass the one to compile")
    return found[0] if found else None


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json (label names, positions) when there is one, else {}."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{cfg} is not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def graph_signature(onnx_file: Path) -> tuple[list[str], dict[str, int]]:
    """(input names, {output name: rank}) of the graph, read without its weights."""
    import onnx

    try:
        graph = onnx.load(str(onnx_file), load_external_data=False).graph
    except Exception as err:  # protobuf raises its own DecodeError, and OSError on reads
        raise ModelError(f"{onnx_file} is not a readable ONNX model ({type(err).__name__}); "
                         "re-export it") from None
    outputs = {o.name: len(o.type.tensor_type.shape.dim) for o in graph.output}
    return [i.name for i in graph.input], outputs


def external_files(onnx_file: Path) -> list[Path]:
    """The external-data files the graph's weights live in, each checked to be inside
    the graph's folder and present."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    folder = onnx_file.parent.resolve()
    found: dict[str, Path] = {}
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key != "location" or entry.value in found:
                continue
            file = (folder / entry.value).resolve()
            if Path(entry.value).is_absolute() or folder not in file.parents:
                raise ModelError(f"{onnx_file.name} keeps weights outside its folder "
                                 f"({entry.value!r}); refusing to read them")
            if not file.is_file():
                raise ModelError(f"{onnx_file.name} keeps weights in {entry.value}, which is missing")
            found[entry.value] = file
    return sorted(found.values())


def onnx_task(onnx_file: Path, config: dict[str, Any], task: str | None) -> str:
    """The encoder task of the graph: given, from the config's architecture, or from the
    first output (``logits`` of rank 2 or 3, or an embedding output)."""
    inputs, outputs = graph_signature(onnx_file)
    if any(name.startswith(("past_key_values", "past.")) for name in inputs):
        raise ModelError(f"{onnx_file} takes a KV cache: decoders compile from their model folder "
                         "(safetensors), not from .onnx")
    if "input_ids" not in inputs:
        raise ModelError(f"{onnx_file} has no input_ids input (inputs: {', '.join(inputs)}); "
                         "edgeopt compiles text models that take tokenizer ids")
    if task is not None:
        if task not in ENCODER_TASK_NAMES:
            raise ModelError(f"an .onnx source compiles as an encoder task ({', '.join(ENCODER_TASK_NAMES)}),"
                             f" not {task}")
        return task
    arch = str((config.get("architectures") or [""])[0])
    if arch.endswith("ForSequenceClassification"):
        return TEXT_CLASSIFICATION
    if arch.endswith("ForTokenClassification"):
        return TOKEN_CLASSIFICATION
    name, rank = next(iter(outputs.items()))
    if name == "logits":
        return TEXT_CLASSIFICATION if rank == 2 else TOKEN_CLASSIFICATION
    if name in _EMBEDDING_OUTPUTS and rank == 2:
        return FEATURE_EXTRACTION
    raise ModelError(f"cannot tell the task of {onnx_file.name} from its first output {name!r} "
                     f"(rank {rank}); pass --task ({', '.join(ENCODER_TASK_NAMES)})")


def check_tokenizer(folder: Path, onnx_file: Path) -> None:
    """An ONNX graph takes ids: the tokenizer that made them must be beside it."""
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelError(f"{onnx_file.name} needs its tokenizer: put the tokenizer files "
                         f"(tokenizer.json or tokenizer_config.json + vocab) in {folder}, the "
                         "folder that holds the .onnx")
