"""Q8_0 and Q4_0 GGUFs for the llama.cpp rows, made by llama.cpp's own quantizer.

    python benchmarks/peers/quantize_gguf.py SRC.gguf OUT.gguf q8_0|q4_0 [--lib libllama.so]

The zoo's SmolLM2 is a Q4_1 GGUF. Requantizing Q4_1 blocks directly would stack a second
grid's rounding on the first, so every tensor is first dequantized to float32 (gguf-py,
metadata copied as is) and that file is quantized with ``llama_model_quantize`` from
the libllama that node-llama-cpp ships: the same code path and per-tensor type choices
as ``llama-quantize`` (the tied token embedding, which is also the output head, gets
llama.cpp's higher-precision choice for the head).
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
from pathlib import Path

# llama_ftype values (llama.h).
FTYPES = {"f32": 0, "q4_0": 2, "q8_0": 7}
_FILE_TYPE_KEY = "general.file_type"


class QuantizeParams(ctypes.Structure):
    """``llama_model_quantize_params`` as llama.h declares it in llama.cpp v0.4.0, the
    release node-llama-cpp 3.21.1 ships; :func:`llama_quantize` checks the defaults it
    reads back so a changed layout fails loudly instead of quantizing wrongly."""

    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
                ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
                ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool),
                ("pure", ctypes.c_bool), ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool),
                ("imatrix", ctypes.c_void_p), ("kv_overrides", ctypes.c_void_p),
                ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
                ("max_buf_size", ctypes.c_size_t)]


def dequantize_to_f32(src: Path, dest: Path) -> None:
    """Write ``dest``: ``src`` with every tensor as float32 and the file type set to F32."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys
    from gguf.quants import dequantize

    reader = GGUFReader(src)
    arch = reader.fields[Keys.General.ARCHITECTURE].contents()
    writer = GGUFWriter(dest, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # The writer adds the architecture and GGUF.* itself; the file type changes.
        if field.name in (Keys.General.ARCHITECTURE, _FILE_TYPE_KEY) or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    writer.add_key_value(_FILE_TYPE_KEY, FTYPES["f32"], GGUFValueType.UINT32)
    for tensor in reader.tensors:
        kind = GGMLQuantizationType(tensor.tensor_type)
        data = np.asarray(tensor.data)
        values = data.astype(np.float32) if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) \
            else dequantize(data, kind)
        writer.add_tensor(tensor.name, np.ascontiguousarray(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_quantize(src: Path, dest: Path, ftype: str, lib: Path, threads: int = 2) -> None:
    """Quantize the float GGUF ``src`` to ``ftype`` with libllama's ``llama_model_quantize``."""
    llama = ctypes.CDLL(str(lib))
    llama.llama_model_quantize_default_params.restype = QuantizeParams
    llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    llama.llama_model_quantize.restype = ctypes.c_uint32
    params = llama.llama_model_quantize_default_params()
    # v0.4.0's defaults: all threads, Q8_0, the output quantized, no type overrides
    # (both set to GGML_TYPE_COUNT), a nonzero row buffer cap.
    seen = (params.nthread, params.ftype, params.quantize_output_tensor, params.allow_requantize,
            params.output_tensor_type == params.token_embedding_type > 0, params.max_buf_size > 0)
    if seen != (0, FTYPES["q8_0"], True, False, True, True):
        raise RuntimeError(f"{lib} has another llama_model_quantize_params layout than llama.cpp "
                           "v0.4.0's; update QuantizeParams from its llama.h")
    params.nthread = threads
    params.ftype = FTYPES[ftype]
    failed = llama.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if failed:
        raise RuntimeError(f"llama_model_quantize({src} -> {ftype}) failed with {failed}")


def requantize(src: Path, dest: Path, ftype: str, lib: Path, threads: int = 2) -> None:
    """``src`` (any GGUF) dequantized to float32, then quantized to ``ftype`` into ``dest``."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        f32 = Path(tmp) / "f32.gguf"
        dequantize_to_f32(src, f32)
        llama_quantize(f32, dest, ftype, lib, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("ftype", choices=sorted(FTYPES))
    parser.add_argument("--lib", type=Path, required=True, help="libllama shared library")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    requantize(args.src, args.out, args.ftype, args.lib, args.threads)


if __name__ == "__main__":
    main()
