"""int8 dynamic quantisation of exported graphs (onnxruntime's ``quantize_dynamic``).

Dynamic quantisation stores each weight matrix as int8 with a float scale (and zero point),
w ≈ scale · (q − zero_point), and quantises each activation on the fly from its own range, so it
needs no calibration data:

    y = x W^T  ≈  s_x s_W · (q_x − z_x)(q_W − z_W)^T      (int8 products, int32 sums)

onnxruntime quantises the MatMul / Gemm weights (linear layers, attention projections, output
heads), the LSTM op's input and recurrent matrices and the Gather of embedding tables; the GRU and
RNN ops and the normalisations stay in float. A 4-byte float becomes a 1-byte integer, so the
file shrinks towards a quarter of its size as the quantised matrices dominate it.
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
OP_TYPES = ["MatMul", "Gemm", "LSTM", "Gather", "Attention"]


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
            graph["float_bytes"] = float_path.stat().st_size
            graph["bytes"] = path.stat().st_size
            graph["sha256"] = file_sha256(path)
        for name in manifest.get("files", {}):
            if float_dir.resolve() != out_dir.resolve():
                shutil.copyfile(float_dir / name, out_dir / name)
    manifest["quantized"] = True
    manifest["quantization"] = {"method": "onnxruntime.quantize_dynamic", "weight_type": "int8",
                                "op_types": OP_TYPES}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
