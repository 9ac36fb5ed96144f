"""Edge runtime: runs exported .tflite files with numpy and a TFLite interpreter, no TensorFlow.

The interpreter is `ai_edge_litert` when installed, else `tflite_runtime`. `load(path)` returns
an `EdgeModel` whose `reconstruct` / `encode` / `decode` (and `encode_distribution` / `sample`
for a VAE) take float arrays with any number of examples: the model's fixed batch is filled
chunk by chunk, int8 files are quantized and dequantized here, and bad input is refused with a
one-line `EdgeError` before it reaches the interpreter. `metadata.json` beside the file, when
present, must match the file's sha256; it also gives the input's value range.

This module imports only the standard library, numpy, the interpreter and (for PNG files)
Pillow, so it works on boards where TensorFlow is not installed.
`load` hands .onnx files (`aezoo export --onnx`) to `export.edge.onnx_runtime`, which runs them in
onnxruntime behind the same API.

Example:
    >>> from export import runtime
    >>> model = runtime.load("export/model_int8.tflite")
    >>> codes = model.encode(images)           # (n, latent_dim) float32
    >>> images = model.decode(codes)           # (n, *input_shape) float32
"""

from pathlib import Path

from export.edge.interpreter import (  # noqa: F401  (the runtime's API: `runtime.EdgeError`, `runtime.SIGNATURES`...)
    INTERPRETERS,
    KERNEL_LABELS,
    KERNELS,
    LABELS,
    METADATA_FILE,
    SIGNATURES,
    VAE_SIGNATURES,
    VERBOSE_ENV,
    EdgeError,
    EdgeModel,
    InterpreterPackage,
    Signature,
    check_kernels,
    find_interpreter,
    float_limit,
    logs_wanted,
    native_logs_hidden,
    sha256_file,
    write_atomically,
)
from export.edge.onnx_runtime import OnnxModel


def load(path, num_threads=None, kernels="default"):
    """Opens an exported .tflite file for inference on this machine.

    Args:
        path: a .tflite file written by `export.export_model` (its metadata.json beside it is
            checked when present; a file alone works too), or one of its onnx/<signature>.onnx
            files (run in onnxruntime by `export.edge.onnx_runtime`, same API).
        num_threads: interpreter threads (None: the interpreter's default).
        kernels: "default" (the interpreter's optimized kernels) or "reference" (its reference
            kernels: slower, but int8 files give the same outputs on every CPU; see KERNELS).

    Returns:
        An `EdgeModel`.

    Raises:
        EdgeError: missing, truncated or foreign file; metadata that does not match the file;
            a file this interpreter is too old for (naming the runtime that runs it).

    Example:
        >>> model = load("out/model_float32.tflite", num_threads=2)
        >>> model.reconstruct(x).shape == x.shape
    """
    check_kernels(kernels)
    if Path(path).suffix.lower() == ".onnx":
        if kernels != "default":
            raise EdgeError(f"kernels={kernels!r} chooses TFLite kernels; {Path(path).name} runs in onnxruntime: drop it")

        return OnnxModel(path, num_threads=num_threads)
    return EdgeModel(path, num_threads=num_threads, kernels=kernels)
