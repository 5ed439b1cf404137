"""int8 dynamic quantisation of exported graphs (onnxruntime's ``quantize_dynamic``).

Dynamic quantisation stores each weight matrix as int8 with a float scale (and zero point),
w ≈ scale · (q − zero_point), and quantises each activation on the fly from its own range, so it
needs no calibration data:

    y = x W^T  ≈  s_x s_W · (q_x − z_x)(q_W − z_W)^T      (int8 products, int32 sums)

onnxruntime quantises the MatMul / Gemm weights (linear layers, attention projections, output
heads), the LSTM op's input and recurrent matrices, the Gather of embedding tables and the Conv
kernels of image encoders. It has no
int8 GRU or RNN op, so their matrices are stored weight-only: int8 with one scale per gate row,
W ≈ s_row · q, turned back into float by a DequantizeLinear node when the session loads (the
arithmetic of those ops stays float). Normalisations and biases stay in float. A 4-byte float
becomes a 1-byte integer, so the file shrinks towards a quarter of its size as the quantised
matrices dominate it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from seqlab.export.onnx import MANIFEST, ExportError, export_onnx, file_sha256
from seqlab.export.runtime import is_export_dir, read_manifest

__all__ = ["OP_TYPES", "quantize_export"]

# The operators whose weights become int8.
OP_TYPES = ["MatMul", "Gemm", "LSTM", "Gather", "Attention", "Conv"]


def quantize_export(source: str | Path, out_dir: str | Path) -> dict:
    """Quantise a run (exported first) or an ONNX export directory into `out_dir`.

    Returns the new manifest: ``quantized: true`` and, per graph, its size in bytes next to the
    float graph's (``bytes``, ``float_bytes``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not is_export_dir(out_dir):
        raise ExportError(f"{out_dir} exists and is not an export directory; pick an empty --out")
    with tempfile.TemporaryDirectory() as scratch:
        if is_export_dir(source):
            float_dir = source
        else:
            float_dir = Path(scratch) / "float"
            export_onnx(source, float_dir)
        manifest = read_manifest(float_dir)
        if manifest.get("quantized"):
            raise ExportError(f"{source} is quantised already; quantise the run or its float export")
        out_dir.mkdir(parents=True, exist_ok=True)
        for graph in manifest["graphs"].values():
            float_path = float_dir / graph["file"]
            path = out_dir / graph["file"]
            logging.disable(logging.WARNING)  # its advice to pre-process applies to static mode
            try:
                quantize_dynamic(str(float_path), str(path), op_types_to_quantize=OP_TYPES,
                                 weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            graph["int8_recurrent_matrices"] = _int8_recurrent_weights(path)
            graph["float_bytes"] = float_path.stat().st_size
            graph["bytes"] = path.stat().st_size
            graph["sha256"] = file_sha256(path)
        for name in manifest.get("files", {}):
            if float_dir.resolve() != out_dir.resolve():
                shutil.copyfile(float_dir / name, out_dir / name)
    manifest["quantized"] = True
    manifest["quantization"] = {"method": "onnxruntime.quantize_dynamic", "weight_type": "int8",
                                "op_types": OP_TYPES,
                                "weight_only": "GRU and RNN matrices, one scale per gate row"}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _int8_recurrent_weights(path: Path) -> int:
    """Store the input and recurrent matrices of the graph's GRU / RNN ops as int8, one scale per
    gate row (symmetric: s = max |w| / 127 over the row, in every direction), each read back by a
    DequantizeLinear node. Returns how many matrices changed (the file is rewritten if any)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    dequantize = []
    for node in graph.node:
        if node.op_type not in ("GRU", "RNN"):
            continue
        for name in node.input[1:3]:  # W (directions, gates x hidden, input), R (..., hidden)
            tensor = initializers.pop(name, None)
            if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
                continue
            weights = numpy_helper.to_array(tensor)
            scale = np.abs(weights).max(axis=(0, 2)) / 127.0
            scale[scale == 0] = 1.0
            q = np.clip(np.round(weights / scale[None, :, None]), -127, 127).astype(np.int8)
            graph.initializer.remove(tensor)
            graph.initializer.extend([
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
            ])
            dequantize.append(helper.make_node(
                "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                [name], name=f"{name}_dequantize", axis=1))
    if dequantize:
        nodes = dequantize + list(graph.node)  # first: every later node may read them
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return len(dequantize)

