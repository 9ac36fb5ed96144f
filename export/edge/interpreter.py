"""The board side's common ground: `EdgeModel` (a .tflite file in a TFLite interpreter), its
signatures, errors, quantization helpers and metadata checks. Standard library and numpy only at
the top; the interpreter is imported on use."""

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from export.edge.tflite_file import ModelFileError, parse_version, read_model_info

METADATA_FILE = "metadata.json"
INTERPRETERS = ("ai_edge_litert", "tflite_runtime")  # preference order
OP_VERSION_ERROR = "Didn't find op for builtin opcode"
QUANTIZED_TYPES = (np.int8, np.int16)  # int8 files; int16 activations of TFLite Micro files of recurrent models
# kernels= -> the interpreter's op resolver. "default": its optimized kernels (and XNNPACK), whose int8
# rounding differs by a step here and there between CPUs and versions, and a network amplifies it
# (tflite_runtime 2.14 ran the presets' int8 files 12 to 52 steps apart on aarch64 and x86_64).
# "reference": the reference kernels, 10 to 140 times slower on the presets, but the same on every
# CPU (docs/boards.md, "Reference kernels").
KERNELS = {"default": "AUTO", "reference": "BUILTIN_REF"}
KERNEL_LABELS = {"default": "", "reference": " (reference kernels)"}  # after the runtime's name in reports


VERBOSE_ENV = "AEZOO_VERBOSE"


def logs_wanted():
    """Whether the user asked for the libraries' own log lines: AEZOO_VERBOSE=1 (`aezoo --verbose`),
    or a TF_CPP_MIN_LOG_LEVEL of their own below 3."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3"


@contextlib.contextmanager
def native_logs_hidden():
    """Sends file descriptor 2 to /dev/null inside the block unless `logs_wanted()`.

    C++ code writes its log lines straight to fd 2, past Python's sys.stderr and logging: the
    TFLite interpreter's "Created TensorFlow Lite XNNPACK delegate", the converter's quantizer
    settings, TensorFlow's start-up lines. Exceptions raised inside still reach the user: they
    are printed after the block, when stderr is back.
    """
    if logs_wanted():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class EdgeError(ValueError):
    """A user error on the edge side (file, metadata, input); the CLI prints it as one line, exit 2."""


@dataclasses.dataclass(frozen=True)
class Signature:
    """One exported function: its input's name and its outputs' names (shared by SavedModel and TFLite)."""

    input: str  # a cvae's signatures take LABELS too
    outputs: tuple


SIGNATURES = {
    "reconstruct": Signature("x", ("reconstruction",)),
    "encode": Signature("x", ("code",)),
    "decode": Signature("z", ("reconstruction",)),
    # A VAE's: the noise eps is an input, so no graph holds a random op.
    "encode_distribution": Signature("x", ("z_mean", "z_log_var")),
    "sample": Signature("eps", ("sample",)),
}
VAE_SIGNATURES = ("encode_distribution", "sample")  # sample: also the aae's and wae's (decode of prior draws)
# A cvae's second input: int32 class ids (n,), made one-hot inside the graph.
LABELS = "labels"


@dataclasses.dataclass(frozen=True)
class InterpreterPackage:
    """The TFLite interpreter package found on this machine; `cls` is its Interpreter class."""

    name: str
    version: str
    cls: type
    resolvers: type | None = None  # a TFLite interpreter's OpResolverType enum (see KERNELS)

    def __str__(self):
        return f"{self.name} {self.version}"


def find_interpreter():
    """The first importable interpreter of `INTERPRETERS`; an EdgeError saying what to install otherwise.

    Example:
        >>> str(find_interpreter())  # e.g. "ai_edge_litert 2.3.0"
    """
    for name in INTERPRETERS:
        try:
            package = importlib.import_module(name)
            module = importlib.import_module(f"{name}.interpreter")
        except ImportError:
            continue
        version = getattr(package, "__version__", "unknown")
        return InterpreterPackage(name, version, module.Interpreter, module.OpResolverType)
    raise EdgeError(
        "no TFLite interpreter installed: pip install ai-edge-litert (or tflite-runtime on Python <= 3.11)"
    )


def float_limit(target, peak):
    """The max abs diff allowed between two float outputs whose largest |value| is `peak`: `target`,
    times `peak` beyond 1. Every float verification (export, ONNX, aarch64) judges by it, as float32
    rounding is relative: codes reaching 30 differ by ~30 times what [0, 1] images do."""
    return target * max(1.0, peak)


def sha256_file(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_kernels(kernels):
    """Raises EdgeError unless `kernels` names a kernel set of KERNELS."""
    if kernels not in KERNELS:
        raise EdgeError(f"unknown kernels {kernels!r}; choose one of: {', '.join(KERNELS)}")


class EdgeModel:
    """An exported model opened in a TFLite interpreter; see `load`.

    Attributes:
        path: the .tflite file.
        metadata: the export's metadata.json with this file's entry under "file" (None without one).
        runtime: the `InterpreterPackage` in use, e.g. "tflite_runtime 2.14.0".
        kernels: "default" or "reference" (see `load`).
        min_runtime_version: the oldest TFLite runtime the converter says runs the file.
        signatures: the signature names the file has.
        batch_size: the fixed batch of the file (inputs of any length are split into it).
        input_shape: one example's shape.
        latent_dim: the code width (None for a vq_vae, whose codes are integer indices).
        code_shape: one example's code: (latent_dim,), or a vq_vae's index grid.
        discrete_codes: whether codes are int32 codebook indices (a vq_vae): encode gives them,
            decode takes them.
        conditional: whether the signatures take class `labels` (a cvae).
        input_range: (low, high) that inputs x must lie in: metadata.json's input range; for a
            file without metadata.json, what its int8 input can represent; None: not checked
            (a model of unbounded data such as standardised series, whose int8 inputs saturate
            as on a board, or a float file alone).
    """

    def __init__(self, path, num_threads=None, kernels="default"):
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: no such model file")
        content = self.path.read_bytes()
        self.metadata = matching_metadata(self.path, content)
        try:
            info = read_model_info(content)
        except ModelFileError as error:
            raise EdgeError(f"{self.path} is not a usable .tflite file: {error}") from None
        self.runtime = find_interpreter()
        self.kernels = kernels
        self.min_runtime_version = info.min_runtime_version
        self._refuse_if_too_old()
        resolver = getattr(self.runtime.resolvers, KERNELS[kernels])
        try:
            with native_logs_hidden():  # ai_edge_litert's "INFO: Created TensorFlow Lite XNNPACK delegate"
                self._interpreter = self.runtime.cls(
                    model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver
                )
        except (ValueError, RuntimeError) as error:
            raise self._load_error(error) from None
        self.signatures = tuple(name for name in SIGNATURES if name in info.signature_keys)
        if "reconstruct" not in self.signatures or "decode" not in self.signatures:
            raise EdgeError(
                f"{self.path} was not written by 'aezoo export': its signatures are "
                f"{', '.join(info.signature_keys) or 'none'}; expected reconstruct, encode, decode"
            )
        self._runners = {}
        x_details = self._runner("reconstruct").get_input_details()["x"]
        self.batch_size = int(x_details["shape"][0])
        self.input_shape = tuple(int(d) for d in x_details["shape"][1:])
        self._read_codes(self._runner("decode").get_input_details())
        if self.metadata is None:  # a file without its metadata.json: at least what int8 can hold
            self.input_range = _representable_range(x_details)
        else:  # the data's bounds ([0, 1] images); None for standardised data, which int8 saturates as a board does
            declared = self.metadata.get("input", {}).get("range")
            self.input_range = tuple(declared) if declared else None

    def _read_codes(self, decode_inputs):
        """The code and label attributes from decode's input details {name: details}."""
        self.code_shape = tuple(int(d) for d in decode_inputs["z"]["shape"][1:])
        self.discrete_codes = takes_ids(decode_inputs["z"])
        self.latent_dim = None if self.discrete_codes else self.code_shape[0]
        self.conditional = LABELS in decode_inputs
        config = (self.metadata or {}).get("model", {}).get("config", {})
        self.id_limits = {"z": config.get("codebook_size"), LABELS: config.get("num_classes")}

    # --- public signatures ---------------------------------------------------------------------
    def reconstruct(self, x, labels=None):
        """Reconstructions of `x` (n, *input_shape), float32; a cvae's of class `labels` (int ids, (n,))."""
        return self.run("reconstruct", x, labels)["reconstruction"]

    def encode(self, x, labels=None):
        """Codes of `x`: float32 (n, latent_dim), a VAE's mean code; a vq_vae's int32 indices (n, *code_shape)."""
        return self.run("encode", x, labels)["code"]

    def decode(self, z, labels=None):
        """Reconstructions (float32) from codes `z` (n, *code_shape): float, or a vq_vae's int indices."""
        return self.run("decode", z, labels)["reconstruction"]

    def encode_distribution(self, x, labels=None):
        """(z_mean, z_log_var) of a VAE or cvae for `x`, each float32 (n, latent_dim)."""
        outputs = self.run("encode_distribution", x, labels)
        return outputs["z_mean"], outputs["z_log_var"]

    def sample(self, n, seed=None, labels=None):
        """Decodings of `n` prior draws eps ~ N(0, I) (VAE, cvae: of class `labels`, one id or n; aae, wae);
        numpy noise, the same seed gives the same draws."""
        if int(n) < 1:
            raise EdgeError(f"sample needs n >= 1, got {n}")
        if labels is not None and np.ndim(labels) == 0:
            labels = np.full((int(n),), labels)
        eps = np.random.default_rng(seed).standard_normal((int(n), *self.code_shape)).astype("float32")
        return self.run("sample", eps, labels)["sample"]

    def run(self, signature, values, labels=None):
        """Runs one signature on `values` (n examples) and returns {output name: array}: float32, or
        int32 codebook indices (a vq_vae's code).

        Args:
            signature: one of `self.signatures`.
            values: array (n, *shape) of the signature's input (x: data, z: codes, eps: noise);
                float, or int indices for a vq_vae's decode.
            labels: a cvae's class ids, int (n,); None for other models.

        Example:
            >>> model.run("encode_distribution", x)["z_log_var"].shape  # (n, latent_dim)
        """
        self.require(signature)
        spec = SIGNATURES[signature]
        runner = self._runner(signature)
        in_details = runner.get_input_details()
        feeds = {spec.input: self._checked(values, spec.input, in_details[spec.input])}
        if LABELS in in_details:
            feeds[LABELS] = self._checked_labels(labels, in_details[LABELS], len(feeds[spec.input]))
        elif labels is not None:
            raise EdgeError(f"{self.path.name} takes no labels (a cvae export does); drop labels")
        out_details = runner.get_output_details()
        chunks = {name: [] for name in spec.outputs}
        for start in range(0, len(feeds[spec.input]), self.batch_size):
            # A fixed-batch model needs a full batch: pad with copies of the last example.
            padded = {name: full_batch(value[start : start + self.batch_size], self.batch_size) for name, value in feeds.items()}
            # The interpreter applies its delegate, and logs it, on a runner's first call.
            with native_logs_hidden() if start == 0 else contextlib.nullcontext():
                outputs = runner(**{name: quantize(value, in_details[name]) for name, value in padded.items()})
            count = len(feeds[spec.input][start : start + self.batch_size])
            for name in spec.outputs:
                chunks[name].append(dequantize(outputs[name], out_details[name])[:count])
        return {name: np.concatenate(parts) for name, parts in chunks.items()}

    # --- checks ---------------------------------------------------------------------------------
    def require(self, signature):
        """Refuses a signature the file does not have, saying which it has."""
        if signature not in self.signatures:
            extra = " (encode_distribution: VAE and cvae exports; sample: those, aae and wae)" if signature in VAE_SIGNATURES else ""
            raise EdgeError(
                f"{self.path.name} has no {signature!r} signature{extra}; it has: {', '.join(self.signatures)}"
            )

    def _checked(self, values, input_name, details):
        """`values` as the float32 (or a vq_vae's int32 indices) input `details` takes, or a one-line EdgeError."""
        what = {"x": "inputs", "z": "codes", "eps": "noise eps"}[input_name]
        example_shape = tuple(int(d) for d in details["shape"][1:])
        if takes_ids(details):
            return self._checked_ids(values, "code indices", example_shape, self.id_limits.get(input_name))
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.floating):
            hint = "; scale 8-bit images with x.astype('float32') / 255" if input_name == "x" else ""
            raise EdgeError(f"{self.path.name} expects float {what}, got dtype {values.dtype}{hint}")
        if values.ndim != len(example_shape) + 1 or values.shape[1:] != example_shape:
            raise EdgeError(
                f"{self.path.name} expects {what} of shape (n, {', '.join(map(str, example_shape))}), "
                f"got {values.shape}"
            )
        if len(values) == 0:
            raise EdgeError(f"{self.path.name} got no {what} (shape {values.shape})")
        values = values.astype(np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            raise EdgeError(
                f"{what} hold {int(bad.sum())} NaN or infinite values (first at index "
                f"{tuple(int(i) for i in np.argwhere(bad)[0])}); clean the data first"
            )
        if input_name == "x" and self.input_range is not None:
            low, high = self.input_range
            tolerance = 1e-6 * max(1.0, high - low)
            if values.min() < low - tolerance or values.max() > high + tolerance:
                raise EdgeError(
                    f"{what} lie in [{values.min():.4g}, {values.max():.4g}], outside the model's input range "
                    f"[{low:.4g}, {high:.4g}]; scale them as the training data was"
                )
        return values

    def _checked_labels(self, labels, details, count):
        if labels is None:
            raise EdgeError(f"{self.path.name} is a cvae export: pass labels, class ids (n,) for the n examples")
        labels = self._checked_ids(labels, "labels", tuple(int(d) for d in details["shape"][1:]), self.id_limits[LABELS])
        if len(labels) != count:
            raise EdgeError(f"{self.path.name} got {len(labels)} labels for {count} examples; pass one class id per example")
        return labels

    def _checked_ids(self, values, what, example_shape, limit):
        """int32 ids (codebook indices, class ids) of shape (n, *example_shape) in [0, limit) when the limit is known."""
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.integer):
            raise EdgeError(f"{self.path.name} expects int {what}, got dtype {values.dtype}; pass what encode returns "
                            "or class ids")
        if values.ndim != len(example_shape) + 1 or values.shape[1:] != example_shape or not len(values):
            raise EdgeError(f"{self.path.name} expects {what} of shape (n, {', '.join(map(str, example_shape))}), "
                            f"got {values.shape}")
        if values.min() < 0 or (limit is not None and values.max() >= limit):
            raise EdgeError(f"{what} must lie in [0, {limit if limit is not None else 'n'}), got {values.min()} to {values.max()}")
        return values.astype(np.int32)

    def _refuse_if_too_old(self):
        # tflite_runtime's own message for this is a multi-line op-version error.
        if (
            self.runtime.name == "tflite_runtime"
            and self.min_runtime_version
            and parse_version(self.runtime.version) < parse_version(self.min_runtime_version)
        ):
            raise EdgeError(self._too_old_message())

    def _too_old_message(self):
        return (
            f"{self.path.name} needs TFLite runtime >= {self.min_runtime_version or 'a newer version'} but "
            f"{self.runtime} is older; run it with ai-edge-litert (pip install ai-edge-litert) or export another mode"
        )

    def _load_error(self, error):
        if OP_VERSION_ERROR in str(error) and self.kernels == "reference":
            # The reference resolver registers fewer op versions than the default one (ai_edge_litert 2.3: TILE v1-2).
            op = str(error).split(OP_VERSION_ERROR, 1)[1].split(".")[0].strip()
            return EdgeError(f"{self.path.name}: {self.runtime}'s reference kernels lack {op}; run it with the default kernels")
        if OP_VERSION_ERROR in str(error):
            return EdgeError(self._too_old_message())
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return EdgeError(f"{self.path}: {self.runtime} cannot load it: {message}")

    def _runner(self, signature):
        if signature not in self._runners:
            try:
                with native_logs_hidden():
                    self._runners[signature] = self._interpreter.get_signature_runner(signature)
            except (ValueError, RuntimeError) as error:
                raise self._load_error(error) from None
        return self._runners[signature]

    def describe_signatures(self):
        """`{signature: {"inputs"|"outputs": {name: {shape, dtype, scale, zero_point}}}}` as the interpreter sees them.

        Examples:
            >>> model.describe_signatures()["reconstruct"]["inputs"]["x"]
            {'shape': [1, 28, 28, 1], 'dtype': 'int8', 'scale': 0.00392, 'zero_point': -128}
        """
        described = {}
        for signature in self.signatures:
            runner = self._runner(signature)
            described[signature] = {
                "inputs": {name: _tensor_description(d) for name, d in runner.get_input_details().items()},
                "outputs": {name: _tensor_description(d) for name, d in runner.get_output_details().items()},
            }
        return described


def matching_metadata(path, content, key=None, export_dir=None):
    """The export's metadata with this file's entry, checked against the file's sha256; None if not listed.

    `key` is the file's entry in metadata.json's "files" (default: its name) and `export_dir` the
    folder holding metadata.json (default: the file's own), for files in a subfolder (onnx/).
    """
    metadata_path = Path(export_dir or path.parent) / METADATA_FILE
    if not metadata_path.is_file():
        return None
    try:
        metadata = json.loads(metadata_path.read_text())
        entry = metadata["files"].get(key or path.name)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EdgeError(f"{metadata_path} is not an aezoo export's metadata ({type(error).__name__}); re-export") from None
    if entry is None:
        return None
    actual = hashlib.sha256(content).hexdigest()
    if entry.get("sha256") != actual:
        raise EdgeError(
            f"{path.name} does not match {METADATA_FILE} (sha256 {actual[:12]}..., expected "
            f"{str(entry.get('sha256'))[:12]}...): the file was changed or truncated; copy the export folder again"
        )
    return {**metadata, "file": entry}


def _tensor_description(details):
    scale, zero_point = details["quantization"]
    description = {"shape": [int(d) for d in details["shape"]], "dtype": np.dtype(details["dtype"]).name}
    if scale:
        description.update(scale=float(scale), zero_point=int(zero_point))
    return description


def _representable_range(details):
    """(low, high) an int8 or int16 input can hold (half a step of slack); None for float inputs."""
    scale, zero_point = details["quantization"]
    if details["dtype"] not in QUANTIZED_TYPES or not scale:
        return None
    bounds = np.iinfo(details["dtype"])
    return ((bounds.min - 0.5 - zero_point) * scale, (bounds.max + 0.5 - zero_point) * scale)


def takes_ids(details):
    """Whether a tensor holds integer ids (int32, unquantized): a vq_vae's indices, a cvae's labels."""
    return np.issubdtype(details["dtype"], np.integer) and details["dtype"] not in QUANTIZED_TYPES


def full_batch(chunk, batch_size):
    """`chunk` padded to `batch_size` examples with copies of its last one."""
    return np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])


def quantize(values, details):
    if details["dtype"] not in QUANTIZED_TYPES:
        return values.astype(details["dtype"])
    scale, zero_point = details["quantization"]
    bounds = np.iinfo(details["dtype"])
    return np.clip(np.round(values / scale + zero_point), bounds.min, bounds.max).astype(details["dtype"])


def dequantize(values, details):
    if takes_ids(details):
        return values.astype(np.int32)
    if details["dtype"] not in QUANTIZED_TYPES:
        return values.astype(np.float32)
    scale, zero_point = details["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def write_atomically(path, write):
    """Writes through a temp file in the target's folder, so a failure leaves no partial file."""
    if not path.parent.is_dir():
        raise EdgeError(f"{path.parent}: no such output folder")
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
