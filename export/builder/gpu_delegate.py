"""GPU delegate compatibility of a float .tflite file: the ops, per signature, that the delegate would not take.

Why not TensorFlow's model analyzer: `tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)`
of the TensorFlow 2.21 and ai-edge-litert 2.3 wheels prints "Your model looks compatible with GPU
delegate" for every model, TOPK_V2 or a 5-D tensor in subgraph 0 included: the analyzer library in
those wheels holds none of the messages of TensorFlow's GPU checker (every rejection it can make),
so the checker is not built into it and the analyzer only prints its closing sentence.
`tests/test_gpu_delegate.py` fails once an installed analyzer flags ops again (then prefer it).

`check` applies the checker's rules itself: the per-op rules of
tensorflow/lite/tools/versioning/gpu_compatibility.cc (`CheckGpuDelegateCompatibility`, in the
offline form the analyzer calls: general broadcasting), on every op of every subgraph, seen as the
delegate sees the graph:
    - a DEQUANTIZE of a float16 constant (each weight of a float16 file) is folded into the ops that
      read it, which then read a constant (the delegate's float16 path);
    - no tensor an op reads or writes has more than 4 dimensions (the delegate lays tensors out as BHWC).
EMBEDDING_LOOKUP, DYNAMIC_UPDATE_SLICE and STABLEHLO_CLAMP, which the checker takes under conditions
not ported here, are refused (none is in the zoo's graphs). What it cannot say: whether a device's
GPU driver runs the file, and how fast (measure on the device).

The zoo's float files take the form the delegate takes whole where it differs (`write_source`:
explicit layer normalisations, an LSTM loop without UNPACK); `check` reads a file with
ai-edge-litert's schema only (no TensorFlow).

Example:
    >>> verdict = check(Path("out/model_float16.tflite").read_bytes())
    >>> verdict.compatible, verdict.ops  # (False, ('ARG_MIN', 'GATHER')) for a vq_vae's file
"""

import dataclasses
import re

MODES = ("float32", "float16")  # the files a GPU delegate is given (it computes in float16 or float32)
MAX_RANK = 4  # BHWC
# Custom ops the checker knows (gpu_compatibility.cc's CheckCustomOpsGpuDelegateCompatibility).
CUSTOM_OPS = ("Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler")
ACTIVATION_SIGN_BIT = 5  # the schema's ActivationFunctionType.SIGN_BIT: the one fused activation refused
RANK = "tensors of more than 4 dimensions"
# What the delegate refuses in the zoo's graphs (an op, or RANK), and the model option that avoids it.
AVOIDED_BY = {
    RANK: "build the model with normalization='batch' (folded into the convolutions) or 'none': group "
    "normalisation computes on 5-D tensors (conv_ae, or a type's conv backbone_config)",
    "ARG_MIN": "no model option: a vq_vae's encoder picks the nearest codebook entry by ARG_MIN, so encode and "
    "reconstruct run partly on the CPU",
    "GATHER": "no model option: a vq_vae's decoder looks its codes up by a GATHER of 2-D indices, so decode and "
    "reconstruct run partly on the CPU",
}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """What a rule sees of one op input or output (gpu_compatibility.cc's OpSignatureTensorSpec)."""

    type: str  # "FLOAT32", "INT32", ...; "" for an omitted optional input
    dims: tuple
    const: bool


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of a subgraph: its name (custom ops: their custom name), tensors and builtin options."""

    name: str
    inputs: tuple
    outputs: tuple
    options: object = None  # the schema's options object (ai_edge_litert.schema_py_generated), None if absent
    custom: bool = False

    def option(self, name, default=0):
        return getattr(self.options, name, default)

    @property
    def runtime_inputs(self):
        return sum(1 for t in self.inputs if t.type and not t.const)

    @property
    def const_inputs(self):
        return sum(1 for t in self.inputs if t.const)

    def counts(self, runtime, outputs, const=None):
        """None when the op has `runtime` non-constant inputs (and `const` constant ones) and `outputs`
        outputs, else the checker's complaint."""
        if const is not None and self.const_inputs != const:
            return f"expected {const} constant input(s), the node has {self.const_inputs}"
        if self.runtime_inputs != runtime:
            return f"expected {runtime} runtime input(s), the node has {self.runtime_inputs}"
        if len(self.outputs) != outputs:
            return f"expected {outputs} output(s), the node has {len(self.outputs)}"
        return None


@dataclasses.dataclass(frozen=True)
class Issue:
    """One op of one signature that the delegate would not take, and why."""

    signature: str
    op: str
    reason: str
    cause: str  # the op, or RANK


@dataclasses.dataclass(frozen=True)
class Verdict:
    """`check`'s answer for one file: the ops of each signature the GPU delegate would not take."""

    issues: tuple

    @property
    def compatible(self):
        return not self.issues

    @property
    def ops(self):
        return tuple(sorted({issue.op for issue in self.issues}))

    @property
    def fix(self):
        """The model options that avoid the refused ops, where the zoo has one (None otherwise)."""
        causes = sorted({issue.cause for issue in self.issues})
        fixes = [f"{cause}: {AVOIDED_BY[cause]}" for cause in causes if cause in AVOIDED_BY]
        return "; ".join(fixes) or None

    def to_json(self):
        """metadata.json's `files.<name>.gpu_delegate`."""
        if self.compatible:
            return {"compatible": True}
        reasons = {}
        for issue in self.issues:
            reasons.setdefault(issue.op, {"reason": issue.reason, "signatures": []})
            if issue.signature not in reasons[issue.op]["signatures"]:
                reasons[issue.op]["signatures"].append(issue.signature)
        return {"compatible": False, "ops": list(self.ops), "reasons": reasons, "fix": self.fix}

    def note(self, file):
        """The export report's line for `file`."""
        if self.compatible:
            return f"GPU delegate: {file} takes every op"
        signatures = sorted({issue.signature for issue in self.issues})
        avoid = f"; {self.fix}" if self.fix else ""
        return (f"GPU delegate: {file} has ops it does not take ({', '.join(self.ops)} in {', '.join(signatures)}), "
                f"which run on the CPU{avoid}")


def write_source(model, folder, batch_size, modes):
    """The SavedModel the float files of `modes` are converted from, in the form the GPU delegate takes
    whole, written into `folder`; None where the export's own source has that form already."""
    from export.builder import convert

    if not convert.needs_gpu_form(model) or not set(modes) & set(MODES):
        return None
    source = folder / ".gpu_source"
    convert.write_saved_model(convert.export_copy(model, gpu_form=True), source, batch_size=batch_size,
                              reconstruct_key="reconstruct")
    return source


def check(content):
    """The `Verdict` of a .tflite file's bytes: every op of every subgraph against the delegate's rules."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    types = {value: key for key, value in vars(schema.TensorType).items() if not key.startswith("_")}
    signatures = {sd.subgraphIndex: _text(sd.signatureKey) for sd in model.signatureDefs or ()}
    issues = []
    for index, subgraph in enumerate(model.subgraphs):
        signature = signatures.get(index, f"subgraph {index}")
        for op in _ops(model, subgraph, names, types):
            reason, cause = _refusal(op)
            if reason:
                issues.append(Issue(signature, op.name, reason, cause))
    return Verdict(tuple(issues))


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _ops(model, subgraph, names, types):
    """The subgraph's ops as the delegate sees them: DEQUANTIZEs of float16 constants folded away."""
    tensors = subgraph.tensors
    const = [_has_data(model.buffers[t.buffer]) if t.buffer else False for t in tensors]
    ops = []
    for operator in subgraph.operators or ():
        code = model.operatorCodes[operator.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        inputs = list(operator.inputs if operator.inputs is not None else ())
        float16_weight = len(inputs) == 1 and const[inputs[0]] and types[tensors[inputs[0]].type] == "FLOAT16"
        if name == "DEQUANTIZE" and float16_weight:
            for output in operator.outputs:
                const[output] = True
            continue
        custom = name == "CUSTOM"
        ops.append(Op(
            _text(code.customCode) if custom else name,
            tuple(_tensor(tensors, const, types, i) for i in inputs),
            tuple(_tensor(tensors, const, types, i) for i in operator.outputs),
            operator.builtinOptions, custom,
        ))
    return ops


def _has_data(buffer):
    return (buffer.data is not None and len(buffer.data) > 0) or (buffer.offset or 0) > 1


def _tensor(tensors, const, types, index):
    if index < 0:  # an omitted optional input
        return Tensor("", (), False)
    tensor = tensors[index]
    return Tensor(types[tensor.type], tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ())),
                  const[index])


def _refusal(op):
    """(why the delegate would not take `op`, the cause: the op or RANK), or (None, None)."""
    for tensor in (*op.inputs, *op.outputs):
        if len(tensor.dims) > MAX_RANK:
            return f"a {len(tensor.dims)}-D tensor (the delegate takes at most {MAX_RANK}-D: BHWC)", RANK
    if op.custom:
        reason = None if op.name in CUSTOM_OPS else f"custom op {op.name}"
    else:
        rule = RULES.get(op.name)
        reason = f"not supported op {op.name}" if rule is None else rule(op)
    return reason, op.name if reason else None


# The rules, after gpu_compatibility.cc: each returns why the delegate refuses an op, or None.


def _ok(op):
    return None


def _activation(op):
    return "fused activation SIGN_BIT" if op.option("fusedActivationFunction") == ACTIVATION_SIGN_BIT else None


def _broadcast(op):
    """ADD and MUL of tensors of different ranks (both above 1) need shapes that broadcast."""
    first, second = op.inputs[0].dims, op.inputs[1].dims
    if len(first) > 1 and len(second) > 1 and len(first) != len(second):
        for a, b in zip(reversed(first), reversed(second)):
            if a != b and 1 not in (a, b):
                return f"no broadcasting of {list(first)} with {list(second)}"
    return None


def _add(op):
    return "ADD takes two inputs" if len(op.inputs) != 2 else _broadcast(op)


def _mul(op):
    if len(op.inputs) != 2:
        return "MUL takes two inputs"
    first, second = op.inputs[0].dims, op.inputs[1].dims
    if len(first) == len(second):
        if any(a < b for a, b in zip(first, second)) and any(b < a for a, b in zip(first, second)):
            return "MUL needs one input at least as large as the other in every dimension"
        return _activation(op)
    return _broadcast(op) or _activation(op)


def _unary(op):
    return op.counts(runtime=1, outputs=1, const=0)


def _binary(op):
    if op.counts(runtime=2, outputs=1, const=0) and op.counts(runtime=1, outputs=1, const=1):
        return "the op takes 1 or 2 operands"
    return _activation(op)


def _one_runtime_input(op):
    return op.counts(runtime=1, outputs=1)


def _pool(op):
    sizes = (op.option("filterHeight"), op.option("filterWidth"), op.option("strideH"), op.option("strideW"))
    if min(sizes) <= 0:
        return "kernel and strides must be positive"
    return op.counts(runtime=1, outputs=1) or _activation(op)


def _convolution(op):
    if op.runtime_inputs > 2 or len(op.outputs) != 1:
        return f"a convolution takes 1 or 2 runtime inputs and gives 1 output ({op.runtime_inputs}, {len(op.outputs)})"
    if min(op.option("strideH"), op.option("strideW"), op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)) <= 0:
        return "strides and dilations must be positive"
    return _activation(op)


def _depthwise(op):
    refused = _convolution(op)
    if refused:
        return refused
    source, kernel, output = op.inputs[0].dims, op.inputs[1].dims, op.outputs[0].dims
    if len(source) != 4 or len(kernel) != 4 or len(output) != 4:
        return "input, filter and output must be 4-D"
    if op.option("depthMultiplier") != 1 and source[3] != 1:
        return "depth_multiplier != 1 needs a 1-channel input"
    return None


def _fully_connected(op):
    if op.option("weightsFormat") != 0:
        return "only the default weights format"
    if op.runtime_inputs > 2:
        return "at most 2 runtime inputs"
    if op.inputs[0].const:
        return "a constant input"
    if op.option("keepNumDims", False) and len(op.inputs[0].dims) != len(op.outputs[0].dims):
        return "keep_num_dims with input and output of different ranks"
    return None


def _cast(op):
    refused = op.counts(runtime=1, outputs=1)
    if refused:
        return refused
    floats = ("FLOAT16", "FLOAT32")
    source, target = op.inputs[0].type, op.outputs[0].type
    if (source == "BOOL" and target in floats) or (source in floats and target == "BOOL"):
        return None
    if source in ("FLOAT32", "INT32") and target in ("FLOAT32", "INT32"):
        return None
    return f"no CAST from {source} to {target}"


def _axes_int32_const(op, index=1):
    axes = op.inputs[index]
    return None if axes.const and axes.type == "INT32" else f"{op.name} needs constant int32 axes"


def _reduce(op):
    return op.counts(runtime=1, outputs=1) or _axes_int32_const(op)


def _mean(op):
    return op.counts(runtime=1, outputs=1, const=1) or _axes_int32_const(op)


def _cumsum(op):
    source, axis = op.inputs[0], op.inputs[1] if len(op.inputs) > 1 else None
    if len(op.inputs) != 2 or source.type not in ("FLOAT16", "FLOAT32") or op.outputs[0].type != source.type:
        return "float input and output only"
    return None if axis.const and axis.type == "INT32" else "a constant int32 axis only"


def _gather(op):
    if op.counts(runtime=2, outputs=1, const=0) and op.counts(runtime=1, outputs=1, const=1):
        return "the op takes 1 or 2 operands"
    if op.inputs[0].type == "INT32":
        return "no INT32 input"
    if len(op.inputs[1].dims) != 1 or op.inputs[1].type != "INT32":
        return "1-D int32 indices only"
    return None


def _block(op):
    return op.counts(runtime=1, outputs=1) or (None if op.option("blockSize") > 1 else "block_size must be > 1")


def _dequantize(op):
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        return "one input and one output"
    return "no int16 dequantization" if op.inputs[0].type == "INT16" else None


def _slice(op):
    if len(op.inputs) < 3:
        return "SLICE takes 3 inputs"
    return None if len(op.inputs[0].dims) in (3, 4) else f"SLICE of {len(op.inputs[0].dims)}-D tensors (3-D or 4-D only)"


def _strided_slice(op):
    for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
        if op.option(mask):
            return f"no {re.sub(r'(?<!^)(?=[A-Z])', '_', mask).lower()}"
    if len(op.inputs) < 4:
        return "STRIDED_SLICE takes 4 inputs"
    rank = len(op.inputs[0].dims)
    return None if rank in (3, 4) else f"STRIDED_SLICE of {rank}-D tensors (3-D or 4-D only)"


def _softmax(op):
    return None if op.option("beta", 0.0) == 1 else "Softmax beta != 1"


def _pad(op):
    if op.name == "MIRROR_PAD" and op.option("mode") != 0:
        return "reflective mirror padding only"
    refused = op.counts(runtime=1, outputs=1)
    if refused or len(op.inputs) < 2:
        return refused or "no paddings input"
    paddings = op.inputs[1].dims
    return None if len(paddings) == 2 and paddings[0] in (3, 4) and paddings[1] == 2 else "paddings of 3x2 or 4x2 only"


def _resize_bilinear(op):
    if op.option("alignCorners", False) and op.option("halfPixelCenters", False):
        return "align_corners with half_pixel_centers"
    return op.counts(runtime=1, outputs=1)


def _transpose_conv(op):
    if op.runtime_inputs > 2 or len(op.outputs) != 1:
        return "a convolution takes 1 or 2 runtime inputs and gives 1 output"
    return None if min(op.option("strideH"), op.option("strideW")) > 0 else "strides must be positive"


def _two_in_one_out(op):
    return None if len(op.inputs) == 2 and len(op.outputs) == 1 else "two inputs and one output"


def _lstm(op):
    if op.option("kernelType") == 0:  # full kernel
        if len(op.inputs) not in (20, 24) or len(op.outputs) != 1:
            return "20 or 24 inputs and one output"
        return None if op.option("fusedActivationFunction") in (4, 6) else "sigmoid or tanh activation only"
    refused = op.counts(runtime=3, outputs=4, const=2)
    if refused or op.option("fusedActivationFunction") != 4:
        return refused or "TANH activation only"
    return None if op.option("cellClip", 0.0) == 0 and op.option("projClip", 0.0) == 0 else "no cell or projection clip"


def _one_hot(op):
    indices = op.inputs[0]
    if indices.type != "INT32":
        return "int32 indices only"
    if op.option("axis") not in (-1, indices.dims[-1] if indices.dims else -1):
        return "axis must be -1 or the last dimension"
    if any(d != 1 for i, d in enumerate(indices.dims[:-1]) if not (len(indices.dims) > 3 and i == 0)):
        return "only batch and channels may be larger than 1"
    values = op.inputs[2:4]
    if any(v.type != "FLOAT32" or not v.const or len(v.dims) > 1 or (v.dims and v.dims[0] > 1) for v in values):
        return "constant scalar float on and off values only"
    return None


def _select(op):
    if len(op.inputs) != 3 or len(op.outputs) != 1:
        return "three inputs and one output"
    floats = ("FLOAT16", "FLOAT32")
    if op.inputs[0].type not in ("BOOL", *floats) or any(t.type not in floats for t in op.inputs[1:]):
        return "a bool or float condition and float values only"
    for value in op.inputs[1:]:
        if value.dims and value.dims != op.outputs[0].dims and (len(value.dims) > 1 or value.dims[0] > 1):
            return "values of the output's shape or scalars only"
        if value.const and len(value.dims) == 2:
            return "no 2-D constant values"
    return None


UNARY = ("ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG", "RSQRT", "SIGN", "SIN",
         "SQRT", "SQUARE", "TANH")
BINARY = ("ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LESS",
          "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW", "SQUARED_DIFFERENCE", "SUB")
RULES = {
    "ADD": _add,
    "ADD_N": lambda op: None if len(op.inputs) == 2 else "ADD_N takes 2 inputs only",
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "BATCH_MATMUL": _two_in_one_out,
    "CAST": _cast,
    "CONCATENATION": _ok,
    "CONV_2D": _convolution,
    "CUMSUM": _cumsum,
    "DENSIFY": lambda op: op.counts(runtime=0, outputs=1),
    "DEPTHWISE_CONV_2D": _depthwise,
    "DEPTH_TO_SPACE": _block,
    "SPACE_TO_DEPTH": _block,
    "DEQUANTIZE": _dequantize,
    "FULLY_CONNECTED": _fully_connected,
    "GATHER": _gather,
    "HARD_SWISH": _one_runtime_input,
    "LSTM": _lstm,
    "MEAN": _mean,
    "MUL": _mul,
    "ONE_HOT": _one_hot,
    "PACK": _ok,
    "QUANTIZE": _one_runtime_input,
    "RELU_N1_TO_1": _ok,
    "PRELU": _ok,
    "RESHAPE": _one_runtime_input,
    "SELECT": _select,
    "SELECT_V2": _select,
    "SLICE": _slice,
    "SOFTMAX": _softmax,
    "SPLIT": _ok,
    "SPLIT_V": _ok,
    "STRIDED_SLICE": _strided_slice,
    "TILE": _one_runtime_input,
    "TRANSPOSE": _one_runtime_input,
    "TRANSPOSE_CONV": _transpose_conv,
    "RESIZE_BILINEAR": _resize_bilinear,
    "RESIZE_NEAREST_NEIGHBOR": _one_runtime_input,
    "RELU": _ok,
    "RELU6": _ok,
    "LEAKY_RELU": _ok,
    **dict.fromkeys(("REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SUM"), _reduce),
    **dict.fromkeys(("PAD", "PADV2", "MIRROR_PAD"), _pad),
    **dict.fromkeys(UNARY, _unary),
    **dict.fromkeys(BINARY, _binary),
}
