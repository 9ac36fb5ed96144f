"""Edge export: SavedModel, TFLite and ONNX artifacts of zoo models, and a TensorFlow-free runtime for them.

`export.runtime` (the edge side) needs only numpy and a TFLite interpreter (or onnxruntime for
.onnx files, `export.onnx_runtime`); everything else
here needs TensorFlow, so it is imported on first use (PEP 562) and `import export.runtime`
stays light on a board.

Example:
    >>> import export
    >>> report = export.export_model(model, "out", quantize="float32,int8", calibration_data="mnist5k")
    >>> edge = export.runtime.load("out/model_int8.tflite")
"""

import importlib

_LAZY = {
    "export_model": "export.exporter",
    "ExportReport": "export.exporter",
    "MODES": "export.convert",
    "load": "export.runtime",
    "EdgeError": "export.runtime",
}

_SUBMODULES = ("benchmark", "convert", "exporter", "micro", "onnx_runtime", "onnx_target", "runtime", "tflite_file")

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"export.{name}")
    raise AttributeError(f"module 'export' has no attribute {name!r}")
