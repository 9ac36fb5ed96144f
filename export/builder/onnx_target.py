"""ONNX target: `onnx/<signature>.onnx` per signature, converted with tf2onnx and verified in ONNX Runtime.

ONNX has no multi-signature file, so every signature (reconstruct, encode, decode; a VAE's
encode_distribution and sample too) gets its own file with a free batch axis named "batch".
Each is converted from the same signature function the SavedModel and the TFLite files are
traced from, then run through the edge runtime (`export.edge.onnx_runtime`, onnxruntime) against
the Keras outputs.

tf2onnx leaves a TensorFlow op it has no handler for in the graph under its TensorFlow name
and still succeeds, so a file ONNX Runtime cannot load would be written. Every converted
graph is therefore checked: an op that is not in the ONNX standard fails the export naming it,
and so does a graph ONNX Runtime refuses. Keras' exact GELU (`tf.nn.gelu`) computes
0.5 * x * erfc(-x / sqrt(2)); tf2onnx 1.17 has no Erfc handler, so `_erfc_as_one_minus_erf`
writes it as 1 - Erf(x), the same function (float32 results agree to rounding), without
touching the TensorFlow graph or trained weights.

Example:
    >>> content = convert_function(functions["reconstruct"], convert.input_specs(copy, "reconstruct", None))
"""

import dataclasses
import hashlib
import importlib

import numpy as np

from export.builder import convert
from export.edge import onnx_runtime, runtime
from zoo.errors import ZooError

FOLDER = "onnx"
OPSET = 15  # ONNX Runtime >= 1.10 runs it (Jetson and older industrial images ship such versions)
PACKAGES = ("tf2onnx", "onnx", "onnxruntime")
INSTALL_HINT = "pip install 'autoencoder-zoo[onnx]' (tf2onnx, onnx, onnxruntime)"


def onnx_name(signature):
    """Path of a signature's ONNX file inside an export folder, e.g. 'onnx/encode.onnx'."""
    return f"{FOLDER}/{signature}.onnx"


def require():
    """{package: version} of the converter's packages; a ZooError naming the missing ones and the install."""
    versions, missing = {}, []
    for name in PACKAGES:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            missing.append(name)
    if missing:
        raise ZooError(f"--onnx needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
    return versions


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx handler: Erfc(x) as Sub(1, Erf(x)) (tf2onnx has Erf but not Erfc)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


CUSTOM_OP_HANDLERS = {"Erfc": (_erfc_as_one_minus_erf, [])}


def convert_function(function, specs, what="the graph"):
    """An ONNX model (bytes) of one signature function, checked to hold standard ONNX ops only.

    Args:
        function: fn(*input tensors) -> {output name: tensor}, as `convert.signature_functions` gives.
        specs: the inputs' tf.TensorSpecs (their names become the ONNX input names; batch None stays free).
        what: how errors name the graph, e.g. "signature 'encode'".

    Raises:
        ZooError: the converter failed, or left ops ONNX Runtime cannot run (named).

    Example:
        >>> convert_function(lambda x: {"y": tf.math.igamma(x, x)}, [tf.TensorSpec((None, 3), tf.float32, name="x")])
        ZooError: the ONNX graph of the graph holds ops that are not ONNX operators (Igamma); ...
    """
    import tensorflow as tf
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_function(
            tf.function(function), input_signature=list(specs), opset=OPSET, custom_op_handlers=CUSTOM_OP_HANDLERS
        )
    except Exception as error:  # tf2onnx raises bare ValueError/KeyError/... on graphs it cannot map
        raise ZooError(f"tf2onnx could not convert {what}: {_first_line(error)}") from None
    _name_batch_axis(proto)
    content = proto.SerializeToString()
    check_runnable(content, what)
    return content


def _name_batch_axis(proto):
    """Names the free first axis of every input and output "batch" (tf2onnx writes 'unk__123')."""
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def check_runnable(content, what="the graph"):
    """Refuses an ONNX model with non-standard ops (named) or one ONNX Runtime cannot load.

    tf2onnx writes an op it cannot map under its TensorFlow name and reports success; such a
    file would fail only on the board, so it is refused here.
    """
    import onnx
    import onnxruntime

    model = onnx.load_from_string(content)
    # The standard domain is "" (or "ai.onnx"); other domains (e.g. ONNX Runtime's contrib ops)
    # are left to the session check below.
    unknown = sorted(
        {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)}
    )
    if unknown:
        raise ZooError(
            f"the ONNX graph of {what} holds ops that are not ONNX operators ({', '.join(unknown)}): tf2onnx "
            "has no handler for them, and ONNX Runtime cannot run the file; the export refuses it"
        )
    try:
        onnxruntime.InferenceSession(content, onnx_runtime.session_options(), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's pybind errors (Fail, InvalidGraph, ...) share no base class
        raise ZooError(f"ONNX Runtime cannot load the ONNX graph of {what}: {_first_line(error)}") from None


def _first_line(error):
    """An exception's first message line (its type name when empty), for one-line errors."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def op_names(content):
    """Sorted ONNX op types of a model (domain-qualified outside the standard domain)."""
    import onnx

    model = onnx.load_from_string(content)
    return sorted({node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}" for node in model.graph.node})


@dataclasses.dataclass
class Written:
    """What `export` hands back to the exporter: one check, metadata.json entries, outputs for reference.npz."""

    check: object  # exporter.ArtifactCheck covering every signature file
    files: dict  # metadata.json "files" entries by relative path
    outputs: dict  # {signature: {output: array}} of ONNX Runtime on the verification inputs


def export(context):
    """Writes and verifies onnx/<signature>.onnx for every signature of an export.

    Args:
        context: the exporter's `ExportContext` (staging folder, export copy, signatures,
            verification inputs, Keras outputs).

    Returns:
        Written.

    Raises:
        ZooError: a signature that does not convert to runnable ONNX (naming the op).
    """
    versions = require()
    folder = context.folder / FOLDER
    folder.mkdir()
    functions = convert.signature_functions(context.copy)
    contents = {}
    for signature in context.signatures:
        specs = convert.input_specs(context.copy, signature, None)
        contents[signature] = convert_function(functions[signature], specs, f"signature {signature!r}")
        (context.folder / onnx_name(signature)).write_bytes(contents[signature])

    edge = runtime.load(context.folder / onnx_name("reconstruct"))
    edge.input_range = context.samples.input_range  # what metadata.json will declare; not written yet
    outputs = {s: edge.run(s, context.inputs[runtime.SIGNATURES[s].input], context.inputs.get(runtime.LABELS))
               for s in context.signatures}
    check = context.compare(
        f"{FOLDER}/", "onnx", sum(map(len, contents.values())), str(edge.runtime), outputs, runs_on_2_14=None
    )
    described = edge.describe_signatures()
    files = {}
    for signature, content in contents.items():
        files[onnx_name(signature)] = {
            "kind": "onnx",
            "signature": signature,
            "size_bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "batch_size": None,
            "opset": OPSET,
            "converter": f"tf2onnx {versions['tf2onnx']} (onnx {versions['onnx']})",
            "inputs": described[signature]["inputs"],
            "outputs": described[signature]["outputs"],
            "ops": op_names(content),
            "runtimes": {"verified_on": [check.verified_on_entry()], "runs_on": {"onnxruntime": f">= 1.10 (opset {OPSET})"}},
            "verification": check.signature_json(signature),
        }
    return Written(check, files, outputs)
