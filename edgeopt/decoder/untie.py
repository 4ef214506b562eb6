"""Give a tied lm_head its own weight, so weight quantizers can see it.

The export stores a tied embedding once: the Gather reads the table and the lm_head
MatMul reads ``Transpose(table)``. onnxruntime's weight quantizers (MatMulNBits, dynamic
INT8) only rewrite a MatMul whose weight is an initializer, so before quantizing the
lm_head gets a transposed copy; the embedding and the head are then quantized each in
its own layout. The fp32 bundle keeps the single copy.

    table --Gather--> ...          table --Gather--> ...
    table --Transpose--> MatMul    table_T ---------> MatMul
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.artifact import OnnxArtifact, PassRecord


def untie_lm_head(artifact: OnnxArtifact, workdir: Path, record: PassRecord) -> OnnxArtifact:
    """Rewrite ``MatMul(x, Transpose(W))`` with ``W`` an initializer; the input is left as is."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(artifact.path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    untied = []
    for node in graph.node:
        src = producer.get(node.input[1]) if node.op_type == "MatMul" else None
        if src is None or src.op_type != "Transpose" or src.input[0] not in inits:
            continue
        perm = next((helper.get_attribute_value(a) for a in src.attribute if a.name == "perm"), None)
        table = numpy_helper.to_array(inits[src.input[0]])
        if table.ndim != 2 or list(perm or [1, 0]) != [1, 0]:
            continue
        name = f"{src.input[0]}_T"
        if name not in inits:
            inits[name] = numpy_helper.from_array(np.ascontiguousarray(table.T), name)
            graph.initializer.append(inits[name])
        node.input[1] = name
        untied.append(node.name)
    record.notes["untied"] = ", ".join(untied) if untied else "none"
    if not untied:
        return artifact
    used = {i for n in graph.node for i in n.input}
    kept = [n for n in graph.node if n.op_type != "Transpose" or any(o in used for o in n.output)
            or any(o in {v.name for v in graph.output} for o in n.output)]
    del graph.node[:]
    graph.node.extend(kept)
    out = workdir / "untied.onnx"
    onnx.save(model, str(out))
    return OnnxArtifact(out)
