"""Deployment formats of a trained run: ONNX graphs, Hugging Face directories, int8 weights."""

from seqlab.export.onnx import EXPORT_FORMAT, MANIFEST, ExportError, export_onnx, model_family
from seqlab.export.recurrent import OnnxRecurrent, export_recurrent_layers
from seqlab.export.runtime import (
    OnnxModel,
    evaluate_export,
    is_export_dir,
    open_export,
    predict_export,
    read_manifest,
)

__all__ = [
    "EXPORT_FORMAT",
    "MANIFEST",
    "ExportError",
    "OnnxModel",
    "OnnxRecurrent",
    "evaluate_export",
    "export_onnx",
    "export_recurrent_layers",
    "is_export_dir",
    "model_family",
    "open_export",
    "predict_export",
    "read_manifest",
]
