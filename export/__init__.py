"""Edge export: SavedModel, TFLite, ONNX and TFLite Micro artifacts of zoo models, and a TensorFlow-free runtime.

Two halves: `export.edge` is the board side (the runtime, the ONNX and TFLite Micro runtimes,
`aezoo predict`), which needs only numpy and an interpreter and imports nothing from the build
side; `export.builder` converts, writes and verifies exports and needs TensorFlow. Names are
imported on first use (PEP 562), so `import export` stays light on a board.

Example:
    >>> import export
    >>> report = export.export_model(model, "out", quantize="float32,int8", calibration_data="mnist5k")
    >>> edge = export.runtime.load("out/model_int8.tflite")
"""

import importlib

_LAZY = {
    "export_model": "export.builder.exporter",
    "ExportReport": "export.builder.exporter",
    "MODES": "export.builder.convert",
    "load": "export.edge.runtime",
    "EdgeError": "export.edge.runtime",
}
# The modules of both halves by their short names: `from export import runtime, micro`.
_SUBMODULES = {
    **{name: f"export.edge.{name}" for name in ("runtime", "onnx_runtime", "micro_runtime", "predict", "tflite_file")},
    **{name: f"export.builder.{name}" for name in ("convert", "exporter", "gpu_delegate", "micro", "onnx_target", "aarch64")},
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'export' has no attribute {name!r}")
