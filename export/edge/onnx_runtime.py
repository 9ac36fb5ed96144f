"""Edge runtime for ONNX exports: `runtime.load("export/onnx/reconstruct.onnx")` runs them in onnxruntime.

An export's ONNX files are one per signature (`onnx/<signature>.onnx`); loading any of them
gives an `OnnxModel` with the API of `runtime.EdgeModel` (reconstruct, encode, decode, and a
VAE's encode_distribution and sample) that opens the sibling file of each signature on first
use. The same input checks apply; ONNX files are float32 with a free batch, so nothing is
quantized or split. `metadata.json` one folder up must match each file's sha256.

Imports only the standard library, numpy and onnxruntime (no TensorFlow).

Example:
    >>> model = runtime.load("export/onnx/reconstruct.onnx")
    >>> model.reconstruct(x); model.encode(x)    # encode runs export/onnx/encode.onnx
"""

import importlib
from pathlib import Path

import numpy as np

from export.edge.interpreter import (
    LABELS,
    SIGNATURES,
    EdgeError,
    EdgeModel,
    InterpreterPackage,
    logs_wanted,
    matching_metadata,
)


def find_onnxruntime():
    """The installed onnxruntime as an `InterpreterPackage`; an EdgeError saying what to install otherwise."""
    try:
        module = importlib.import_module("onnxruntime")
    except ImportError:
        raise EdgeError("no ONNX Runtime installed: pip install onnxruntime (or run a .tflite file)") from None
    return InterpreterPackage("onnxruntime", module.__version__, module.InferenceSession)


def session_options():
    """onnxruntime SessionOptions that log errors only (its warnings, e.g. on the resize modes tf2onnx
    writes, are not the user's to act on) unless `runtime.logs_wanted()`."""
    options = importlib.import_module("onnxruntime").SessionOptions()
    if not logs_wanted():
        options.log_severity_level = 3
    return options


class OnnxModel(EdgeModel):
    """An export's ONNX files opened in onnxruntime; see `runtime.load`.

    Attributes as `EdgeModel`'s; `batch_size` is None (any batch), `min_runtime_version` None, and
    `kernels` "default" (onnxruntime's).
    """

    kernels = "default"

    def __init__(self, path, num_threads=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: no such model file")
        if self.path.stem not in SIGNATURES:
            raise EdgeError(
                f"{self.path.name} was not written by 'aezoo export --onnx': its files are named "
                f"<signature>.onnx with a signature of {', '.join(SIGNATURES)}"
            )
        self.runtime = find_onnxruntime()
        self._num_threads = num_threads
        self.min_runtime_version = None
        self.batch_size = None
        folder = self.path.parent
        self.signatures = tuple(name for name in SIGNATURES if (folder / f"{name}.onnx").is_file())
        if "reconstruct" not in self.signatures or "decode" not in self.signatures:
            raise EdgeError(
                f"{folder} lacks reconstruct.onnx or decode.onnx; copy the whole onnx/ folder of the export"
            )
        self._sessions = {}
        self.metadata = self._session(self.path.stem)[1]
        self.input_shape = self._example_shape("reconstruct")
        self._read_codes(self._input_details("decode"))
        declared = (self.metadata or {}).get("input", {}).get("range")
        self.input_range = tuple(declared) if declared else None

    def run(self, signature, values, labels=None):
        """Runs one signature on `values` (n examples) and returns {output name: array}; see EdgeModel.run."""
        self.require(signature)
        spec = SIGNATURES[signature]
        details = self._input_details(signature)
        feeds = {spec.input: self._checked(values, spec.input, details[spec.input])}
        if LABELS in details:
            feeds[LABELS] = self._checked_labels(labels, details[LABELS], len(feeds[spec.input]))
        elif labels is not None:
            raise EdgeError(f"{self.path.name} takes no labels (a cvae export does); drop labels")
        outputs = self._session(signature)[0].run(list(spec.outputs), feeds)
        return {name: _as_output(value) for name, value in zip(spec.outputs, outputs)}

    def describe_signatures(self):
        """{signature: {"inputs"|"outputs": {name: {shape, dtype}}}}; the batch axis is "batch" (free)."""
        def described(values):
            return {
                value.name: {"shape": list(value.shape), "dtype": value.type[len("tensor("):-1].replace("float", "float32")}
                for value in values
            }

        return {
            signature: {"inputs": described(session.get_inputs()), "outputs": described(session.get_outputs())}
            for signature, session in ((s, self._session(s)[0]) for s in self.signatures)
        }

    def _example_shape(self, signature):
        return tuple(int(d) for d in self._session(signature)[0].get_inputs()[0].shape[1:])

    def _input_details(self, signature):
        """{input name: {dtype, shape, quantization}} of a signature's file, as `EdgeModel` reads a TFLite runner's."""
        return {
            value.name: {"dtype": np.int32 if value.type == "tensor(int32)" else np.float32,
                         "shape": [0, *value.shape[1:]], "quantization": (0.0, 0)}
            for value in self._session(signature)[0].get_inputs()
        }

    def _session(self, signature):
        """(InferenceSession, metadata with this file's entry or None) of a signature's file, opened once."""
        if signature not in self._sessions:
            path = self.path.parent / f"{signature}.onnx"
            content = path.read_bytes()
            metadata = matching_metadata(path, content, f"{path.parent.name}/{path.name}", path.parent.parent)
            options = session_options()
            if self._num_threads:
                options.intra_op_num_threads = int(self._num_threads)
            try:
                session = self.runtime.cls(content, options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) share no base
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise EdgeError(f"{path}: {self.runtime} cannot load it: {message}") from None
            self._sessions[signature] = (session, metadata)
        return self._sessions[signature]


def _as_output(value):
    """An output as the runtime gives it: int32 indices stay int32, the rest is float32."""
    value = np.asarray(value)
    return value.astype(np.int32) if np.issubdtype(value.dtype, np.integer) else value.astype(np.float32)
