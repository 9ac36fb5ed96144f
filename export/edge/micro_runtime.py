"""Running TFLite Micro files on a host: `load(path)` opens one file of an export's micro/ folder in
the TFLM Python interpreter (`pip install tflite-micro`) behind the `EdgeModel` API, one example
per invoke as a board runs it."""

import hashlib
import json
from pathlib import Path

import numpy as np

from export.edge.interpreter import (
    SIGNATURES,
    EdgeError,
    EdgeModel,
    dequantize,
    quantize,
)

MICRO_DIR = "micro"
MICRO_FILE = "micro.json"


def find_tflm():
    """TFLM's Python `runtime` module; an EdgeError saying what to install when it is absent."""
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
    except ImportError:
        raise EdgeError("the micro target needs the TFLite Micro interpreter: pip install tflite-micro") from None
    return tflm


def tflm_version():
    """The installed tflite-micro version, e.g. '0.dev20261023182759'."""
    from importlib import metadata

    return metadata.version("tflite-micro")


def load(path):
    """Opens a micro file (with its micro.json beside it) in the TFLM interpreter; see `MicroModel`."""
    return MicroModel(path)


class MicroModel(EdgeModel):
    """One micro file in the TFLM interpreter, with the arena micro.json gives; batch 1, one signature.

    It takes float inputs of any length like `EdgeModel` (same checks, same quantization)
    and runs them one example at a time, as a board does. Only the EdgeModel methods that go
    through `run` apply (no signature runners here).

    Args:
        path: a file of an export's micro/ folder.
        entry: its micro.json entry (the export passes it before micro.json is written);
            None reads micro.json beside the file.
    """

    def __init__(self, path, entry=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: no such model file")
        listing = self.path.parent / MICRO_FILE
        if entry is None and listing.is_file():
            try:
                entry = json.loads(listing.read_text())["files"].get(self.path.name)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise EdgeError(f"{listing} is not an aezoo micro.json; re-export with --micro") from None
        if entry is None:
            raise EdgeError(
                f"{self.path.name} is not listed in a {MICRO_FILE} beside it; --runtime micro runs the files "
                f"of an export's {MICRO_DIR}/ folder (aezoo export --micro)"
            )
        content = self.path.read_bytes()
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            raise EdgeError(f"{self.path.name} does not match {MICRO_FILE}: the file was changed; copy the micro folder again")
        tflm = find_tflm()
        self.metadata, self.runtime, self.min_runtime_version = entry, f"tflite-micro {tflm_version()}", None
        self.arena_bytes = entry["arena_bytes"]
        try:
            self._interpreter = tflm.Interpreter.from_bytes(content, arena_size=self.arena_bytes)
        except RuntimeError as error:
            raise EdgeError(f"{self.path.name} does not load in TFLite Micro ({error}); re-export with --micro") from None
        self.signatures = (entry["signature"],)
        self.batch_size = 1
        self._input = tensor_details(entry["input"])
        self._outputs = [(output["name"], tensor_details(output)) for output in entry["outputs"]]
        shape = tuple(entry["input_shape"])
        self.input_shape = shape if SIGNATURES[entry["signature"]].input == "x" else None
        self.latent_dim = shape[0] if self.input_shape is None else entry.get("latent_dim")
        self.code_shape = (self.latent_dim,)
        self.input_range = tuple(entry["input_range"]) if entry.get("input_range") else None

    def require(self, signature):
        if signature not in self.signatures:
            raise EdgeError(
                f"{self.path.name} holds only the {self.signatures[0]!r} signature, not {signature!r}; "
                f"pick the model_{signature}_* file from the same folder"
            )

    def run(self, signature, values, labels=None):
        """Runs the file's signature on `values` (n examples), one invoke per example; {output: float32}.
        A micro file has one input: `labels` (a cvae's) cannot be given."""
        if labels is not None:
            raise EdgeError(f"{self.path.name} takes one input, and a micro file takes no labels; drop them")
        self.require(signature)
        values = self._checked(values, SIGNATURES[signature].input, {**self._input, "shape": [1, *self.metadata["input_shape"]]})
        raw = self.run_quantized(quantize(values, self._input))
        return {name: dequantize(raw[name], details) for name, details in self._outputs}

    def run_quantized(self, values):
        """Raw quantized outputs for quantized inputs (n, *shape): what the verification compares step by step."""
        results = {name: [] for name, _ in self._outputs}
        for example in values:
            self._interpreter.set_input(example[None], 0)
            self._interpreter.invoke()
            for index, (name, _) in enumerate(self._outputs):
                results[name].append(np.array(self._interpreter.get_output(index)))
        return {name: np.concatenate(parts) for name, parts in results.items()}


def tensor_details(tensor):
    """A micro.json tensor entry as the interpreter-style details `quantize` / `dequantize` take."""
    return {"dtype": np.dtype(tensor["dtype"]).type, "quantization": (tensor["scale"], tensor["zero_point"])}
