"""TensorFlow side of the export: the export copy, SavedModels with named signatures, TFLite files.

Every graph is traced from the signature functions below, so the SavedModel, each TFLite mode
and the Keras reference the verification compares against all run the same computation.
The TFLite converter is restricted to builtin ops: a graph that would need Flex (TensorFlow
kernels) or custom ops fails the export with the op names, since edge interpreters cannot run it.
"""

import warnings

import flatbuffers
import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tensorflow.lite.python.convert import mlir_quantize
from tensorflow.lite.python.convert_phase import ConverterError
from tensorflow.lite.python.schema_py_generated import BuiltinOperator
from tensorflow.lite.tools import flatbuffer_utils

from export.edge.runtime import LABELS, SIGNATURES, VAE_SIGNATURES, native_logs_hidden
from export.edge.tflite_file import read_model_info
from zoo.errors import ZooError

MODES = ("float32", "float16", "dynamic", "int8")
# A random op would make an exported graph non-deterministic; VAE noise is an input instead.
RANDOM_OPS = ("RANDOM_STANDARD_NORMAL", "RANDOM_UNIFORM", "MULTINOMIAL")
# Ops an int8 file of an attention graph (one with SOFTMAX) keeps in float32. Their int8 kernels
# (attention softmax, the layer norms' MEAN, SQUARED_DIFFERENCE, RSQRT and MUL; measured
# variant by variant) round differently on aarch64 and x86_64, and the attention amplifies a
# 1-step difference into tens of output steps (the Transformer preset: 67 steps, 40% of pixels
# over 1 step, on a Cortex-A72; with these ops float: 0 steps, docs/boards.md, "Verified on aarch64").
ATTENTION_FLOAT_OPS = ("SOFTMAX", "BATCH_MATMUL", "MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL")
# Ops an int8 file of a recurrent graph (the export's unrolled LSTM) keeps in float32: the cell's
# gates and state update. All-int8, the LSTM preset's file scored 12.81 dB PSNR against Keras' 20.10
# and differed by 27 steps on a Cortex-A72; with these in float, 19.90 dB and 0 steps; the input and
# recurrent projections stay int8 (docs/boards.md, "LSTM cells keep their arithmetic in float32"). Of the
# subsets tried by editing this list, only TANH, MUL and ADD did as well (19.88 dB); LOGISTIC and
# TANH, or those and MUL, or ADD alone still gave 12.8 dB. SPLIT (into the four gates) is float
# too: in int8 every step re-quantized the summed projections (one more rounding) and dequantized
# each gate apart; in float the file holds 1,698 ops instead of 2,238 and 235 KB instead of 252 KB
# (0.34x its float32 file), and scores 19.90 dB instead of 19.86.
RECURRENT_FLOAT_OPS = ("LOGISTIC", "TANH", "MUL", "ADD", "SPLIT")
# Ops an int8 file of a conv-backbone vq_vae keeps in float32: the distances to the codebook entries
# and their ARG_MIN. In int8 each term is rounded to its own scale and near ties flip: the vq_vae
# preset's int8 encode gave Keras' index at 81.6% of grid positions, with these in float 98.4%.
# Other backbones' dense layers are FULLY_CONNECTED too, so there the distances stay int8
# (`codebook_in_float`).
CODEBOOK_FLOAT_OPS = ("SQUARE", "SUM", "FULLY_CONNECTED", "SUB", "ADD", "ARG_MIN")
# How many ops before the code vectors also stay float32 in such a file (`code_vector_ops`): the
# code head and the trunk's last op. The vq_vae preset's index agreement with Keras on 512 test
# images: 98.4% with the distances alone in float, 98.9% with the code head too, 99.2% with both
# (the file grows from 94 to 149 KB; the first convolution and the decoder stay int8).
CODE_FLOAT_DEPTH = 2


def export_copy(model, explicit_norms=False, gpu_form=False):
    """A float32 copy of `model` with the same weights, in the form the converter handles.

    Mixed-precision models compute in float16/bfloat16, which edge interpreters run poorly or
    not at all, so the export traces a float32 copy. LSTMs are unrolled (`_unrolled_lstm_loop`):
    the converter crashes when it calibrates the loop (WHILE) form for int8. With
    `explicit_norms`, layer normalisations take the form int16x8 files need (`_explicit_layer_norm`).
    With `gpu_form` (the float files' copy, see `needs_gpu_form`), the form the GPU delegate takes
    whole: explicit layer normalisations (Keras' form multiplies a (tokens, 1) tensor by a (1, width)
    one, a MUL the delegate refuses) and an LSTM loop without UNPACK and 2-D slices.

    Example:
        >>> copy = export_copy(zoo.create("lstm_ae", (28, 28), 16, dtype="mixed_float16"))
        >>> copy.dtype_policy.name, copy.unroll  # ('float32', True)
    """
    config = {**model.get_config(), "dtype": "float32"}
    if model.registry_name == "lstm_ae":
        config["unroll"] = True
    if hasattr(model, "backbone_name") and config["backbone"] == "lstm":
        config["backbone_config"] = {**config["backbone_config"], "unroll": True}
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    for layer in copy._flatten_layers():
        if isinstance(layer, keras.layers.LSTM):
            layer.inner_loop = _unrolled_lstm_loop(layer, gpu_form)
        if (explicit_norms or gpu_form) and isinstance(layer, keras.layers.LayerNormalization):
            layer.call = _explicit_layer_norm(layer)
    return copy


def needs_gpu_form(model):
    """Whether `export_copy(model, gpu_form=True)` differs: the model holds an LSTM or a layer normalisation."""
    return any(isinstance(layer, (keras.layers.LSTM, keras.layers.LayerNormalization)) for layer in model._flatten_layers())


def _explicit_layer_norm(layer):
    """A `call` for LayerNormalization `layer` computing (x - mean) * rsqrt(var + eps) * gamma + beta.

    Keras' form adds -mean * rsqrt(...) instead: a NEG, which the int16x8 quantizer has no
    kernel for. The variance squares by a MUL, since the converter would fuse a square of a
    difference into SQUARED_DIFFERENCE, which the reference kernels run in int8 only.
    """
    if layer.rms_scaling or not (layer.scale and layer.center):
        raise ZooError(
            f"layer normalisation {layer.name} has scale, center or rms_scaling changed; the export handles Keras' "
            "default: build it with scale=True, center=True, rms_scaling=False"
        )

    def call(inputs):
        centered = inputs - ops.mean(inputs, axis=layer.axis, keepdims=True)
        variance = ops.mean(centered * centered, axis=layer.axis, keepdims=True)
        return centered * ops.rsqrt(variance + layer.epsilon) * layer.gamma + layer.beta

    return call


def _unrolled_lstm_loop(layer, gpu_form=False):
    """An `inner_loop` for LSTM `layer` that computes what Keras' unrolled loop does, in fewer
    ops per time step: the input projections x_t W + b are one matmul over the sequence, before
    the loop, so a step holds one FULLY_CONNECTED (h U) instead of two, a RESHAPE and an ADD.
    The ops repeat per step and per signature, and their tables outweigh an int8 file's
    weights (the LSTM preset's int8 file: 0.36x its float32 file with Keras' loop, 0.34x).

    `gpu_form`: the time steps by SPLIT and RESHAPE, not UNPACK, and every step's gates by SPLIT
    (the GPU delegate has no UNPACK and slices 3-D and 4-D tensors only); float files only.
    """
    cell = layer.cell
    if (cell.activation, cell.recurrent_activation, cell.use_bias) != (
        keras.activations.tanh, keras.activations.sigmoid, True
    ):
        raise ZooError(
            f"LSTM {layer.name} has other activations or no bias; export handles Keras' defaults "
            "(tanh, sigmoid, use_bias=True): build the model with them"
        )

    def inner_loop(sequences, initial_state, mask, training=False):
        projected = ops.matmul(sequences, cell.kernel) + cell.bias
        if gpu_form:
            steps = ops.split(projected, projected.shape[1], axis=1)
            projected = [ops.reshape(step, (-1, step.shape[-1])) for step in steps]
        else:
            projected = ops.unstack(projected, axis=1)
        h, c = initial_state
        outputs = []
        for step, x_projected in enumerate(reversed(projected) if layer.go_backwards else projected):
            z = x_projected + ops.matmul(h, cell.recurrent_kernel)
            if step == 0 and not gpu_form:
                # Slices, not a SPLIT: from the zero initial state f * c folds away, and int8 left
                # a SPLIT with that unused output in float (DEQUANTIZE, QUANTIZE around it).
                i, f, g, o = (z[:, k * cell.units : (k + 1) * cell.units] for k in range(4))
            else:
                i, f, g, o = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h = ops.sigmoid(o) * ops.tanh(c)
            outputs.append(h)
        return h, ops.stack(outputs, axis=1), [h, c]

    return inner_loop


def family(model):
    """The network family `model` computes with: its registry name, or the backbone of a type built on
    one (vae, cvae, vq_vae, aae, wae, masked_ae) as `<backbone>_ae`."""
    return f"{model.backbone_name}_ae" if hasattr(model, "backbone_name") else model.registry_name


def is_conditional(model):
    """Whether `model`'s signatures take class `LABELS` (the cvae)."""
    return model.registry_name == "cvae"


def has_discrete_codes(model):
    """Whether `model`'s codes are int codebook indices (the vq_vae)."""
    return hasattr(model, "index_shape")


def codebook_in_float(model):
    """Whether `model`'s int8 file keeps its codebook distances in float32: a vq_vae on the conv
    backbone, whose only FULLY_CONNECTED and ADD ops are the distances' (and its residual blocks' adds)."""
    return has_discrete_codes(model) and family(model) == "conv_ae"


def is_recurrent(model):
    """Whether `model` holds an LSTM (lstm_ae, or a VAE with the lstm backbone)."""
    return family(model) == "lstm_ae"


def has_attention(model):
    """Whether `model` holds attention blocks (transformer_ae, or a VAE with the transformer backbone)."""
    return family(model) == "transformer_ae"


def signature_names(model):
    """The signatures an export of `model` has: reconstruct, encode, decode, and those of
    `VAE_SIGNATURES` the model has a method for (VAE, cvae: both; aae, wae: sample)."""
    return ("reconstruct", "encode", "decode") + tuple(name for name in VAE_SIGNATURES if hasattr(model, name))


def input_names(model, signature):
    """A signature's input names, in the order its function takes them: its `SIGNATURES` input, then a cvae's labels."""
    return (SIGNATURES[signature].input, *((LABELS,) if is_conditional(model) else ()))


def signature_functions(model):
    """{signature: fn(*input tensors) -> {output name: tensor}} with the names of `runtime.SIGNATURES`;
    the inputs are `input_names`. A cvae's labels are int class ids, one-hot by a GATHER of the
    identity (TFLite Micro has that kernel, not ONE_HOT)."""
    computations = {
        "reconstruct": (lambda x, labels: model((x, labels))) if is_conditional(model) else model,
        "encode": model.encode,
        "decode": model.decode,
        "encode_distribution": getattr(model, "encode_distribution", None),
        "sample": model.decode,  # of eps ~ N(0, I), drawn outside the graph
    }

    def one_hot(labels):
        # Built inside the traced function: a tensor made outside would be a captured input in ONNX.
        return tf.gather(tf.eye(model.num_classes), labels)

    def named(signature):
        compute, outputs = computations[signature], SIGNATURES[signature].outputs
        if not is_conditional(model):
            return lambda value: dict(zip(outputs, tf.nest.flatten(compute(value))))
        return lambda value, labels: dict(zip(outputs, tf.nest.flatten(compute(value, one_hot(labels)))))

    return {signature: named(signature) for signature in signature_names(model)}


def input_specs(model, signature, batch_size):
    """The TensorSpecs of a signature's inputs (`input_names`); batch_size None leaves the batch free.

    x and eps are float32; z is float32 (batch, latent_dim), or a vq_vae's int32 indices
    (batch, *index_shape); a cvae's labels are int32 class ids (batch,).
    """
    name = SIGNATURES[signature].input
    shape, dtype = (model.latent_dim,), tf.float32
    if name == "x":
        shape = model.data_shape
    elif name == "z" and has_discrete_codes(model):
        shape, dtype = model.index_shape, tf.int32
    specs = [tf.TensorSpec((batch_size, *shape), dtype, name=name)]
    if is_conditional(model):
        specs.append(tf.TensorSpec((batch_size,), tf.int32, name=LABELS))
    return specs


def write_saved_model(model, directory, batch_size=None, reconstruct_key="serving_default"):
    """Saves `model`'s signature functions as a SavedModel (no training graph, no random op).

    Args:
        model: a float32 export copy.
        directory: where to write it.
        batch_size: fixed batch of every signature, or None for any batch.
        reconstruct_key: the signature key of `reconstruct` ("serving_default" for TF Serving).

    Example:
        >>> write_saved_model(copy, "out/saved_model")
        >>> tf.saved_model.load("out/saved_model").signatures["encode"](x=x)["code"]
    """
    # No archive.track(model): endpoints track the variables they use, and walking the whole
    # model for other resources doubles the save time.
    archive = keras.export.ExportArchive()
    for signature, function in signature_functions(model).items():
        key = reconstruct_key if signature == "reconstruct" else signature
        archive.add_endpoint(key, function, input_signature=input_specs(model, signature, batch_size))
    archive.write_out(str(directory), verbose=False)


def convert(saved_model_dir, signatures, mode, representative_dataset=None, all_int8=False, recurrent=False,
            codebook=False):
    """One multi-signature .tflite model from a fixed-batch SavedModel, builtin ops only.

    Args:
        saved_model_dir: written by `write_saved_model` with a fixed batch and
            reconstruct_key="reconstruct".
        signatures: the signature keys to convert.
        mode: "float32", "float16" (float16 weights), "dynamic" (int8 weights, float
            activations), "int8" (int8 weights, activations, inputs and outputs) or "int16x8"
            (int8 weights, int16 activations, inputs and outputs: TFLite Micro files of
            LSTM and attention graphs, see `export.builder.micro.preferred_precision`).
        representative_dataset: for int8 and int16x8, a generator function yielding
            (signature, {input name: array}) pairs of real samples.
        all_int8: int8 every op even in an attention or recurrent graph (TFLite Micro has no mixed
            files); by default an attention graph keeps `ATTENTION_FLOAT_OPS` in float32.
        recurrent: the graph holds an LSTM (`is_recurrent`): unless all_int8, its int8 file keeps
            `RECURRENT_FLOAT_OPS` in float32.
        codebook: the graph is a vq_vae's that may keep its codebook distances float
            (`codebook_in_float`): unless all_int8, its int8 file keeps `CODEBOOK_FLOAT_OPS` in float32.

    Returns:
        The .tflite file's bytes.

    Raises:
        ZooError: the graph needs non-builtin (Flex/custom) ops or a random op.

    Example:
        >>> content = convert("tmp/fixed", ["reconstruct", "encode", "decode"], "int8", samples)
    """
    converter = _configured_converter(saved_model_dir, signatures, mode, representative_dataset, all_int8)
    try:
        # native_logs_hidden: the converter prints its quantizer settings ("fully_quantize: 0, ...") from C++.
        with warnings.catch_warnings(), native_logs_hidden():
            # int8 calibration runs TensorFlow's own, deprecated tf.lite.Interpreter: not ours to fix.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
            content = converter.convert()
            if mode == "int8" and not all_int8:
                content = _int8_keeping_float_ops(content, recurrent, codebook)
    except ConverterError as error:
        needs = sorted({e.operator.name for e in getattr(error, "errors", []) if e.operator.name})
        if not needs:
            raise
        raise ZooError(
            f"the {mode} TFLite graph needs ops that are not TFLite builtins ({', '.join(needs)}); "
            "edge interpreters cannot run Flex/custom ops, so the export refuses them"
        ) from None
    check_builtin_only(content, mode)
    return compact(content)


def _configured_converter(saved_model_dir, signatures, mode, representative_dataset, all_int8):
    """The TFLiteConverter of `convert`, set up for `mode` (an int8 one calibrates only, unless all_int8)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int16x8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int16
        converter.representative_dataset = representative_dataset
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter.representative_dataset = representative_dataset
        # One scale per dense kernel, not one per output unit: per-unit scales (a float32 and an
        # int64 zero point each, repeated in every signature's subgraph) were a fifth of a VAE
        # preset's int8 file; the presets' int8 PSNR moved by at most 0.02 dB.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        # Calibrated float graph first: whether it holds attention decides what stays float.
        converter._experimental_calibrate_only = not all_int8
    return converter


def _int8_keeping_float_ops(calibrated, recurrent, codebook):
    """An int8 file from a calibrated float graph, keeping an attention's, LSTM's or codebook's float ops in float32."""
    float_ops = {*(ATTENTION_FLOAT_OPS if "SOFTMAX" in op_names(calibrated) else ()),
                 *(RECURRENT_FLOAT_OPS if recurrent else ()), *(CODEBOOK_FLOAT_OPS if codebook else ())}
    float_nodes = code_vector_ops(calibrated) if codebook else []
    # Lists: the quantizer's binding silently ignores a tuple.
    return mlir_quantize(calibrated, input_data_type=tf.int8, output_data_type=tf.int8,
                         denylisted_ops=sorted(float_ops) or None, denylisted_nodes=float_nodes or None,
                         disable_per_channel_for_dense_layers=True)


def code_vector_ops(content, depth=CODE_FLOAT_DEPTH):
    """Names of the `depth` ops that compute a conv vq_vae's code vectors, in every signature of a
    calibrated .tflite model (the quantizer names an op by its output tensor: `denylisted_nodes`)."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    return sorted({subgraph.tensors[t].name.decode() for subgraph, t in code_vector_tensors(model, depth)})


def code_vector_tensors(model, depth=CODE_FLOAT_DEPTH):
    """(subgraph, tensor index) pairs: the outputs of the `depth` ops that compute the code vectors.

    The code vectors are the first input of each distance FULLY_CONNECTED (x . codebook) of a
    flatbuffer `ModelT`; from there the walk goes up the first inputs: the code head, then the
    trunk's last op.
    """
    fully_connected = {i for i, code in enumerate(model.operatorCodes)
                       if max(code.builtinCode, code.deprecatedBuiltinCode) == BuiltinOperator.FULLY_CONNECTED}
    for subgraph in model.subgraphs:
        producer = {output: op for op in subgraph.operators for output in op.outputs}
        for op in subgraph.operators:
            if op.opcodeIndex not in fully_connected:
                continue
            tensor = op.inputs[0]
            for _ in range(depth):
                if tensor not in producer:
                    break
                yield subgraph, tensor
                tensor = producer[tensor].inputs[0]


def op_names(content):
    """Sorted names of the operators a .tflite model uses (custom ops by their custom name)."""
    names = {value: key for key, value in vars(BuiltinOperator).items() if not key.startswith("_")}
    return sorted(
        {op.custom_code or names.get(op.builtin_code, str(op.builtin_code)) for op in read_model_info(content).operator_codes}
    )


def check_builtin_only(content, mode):
    """Refuses a converted model that holds a Flex, custom or random op (the converter's last word is not trusted)."""
    info = read_model_info(content)
    refused = [op.custom_code for op in info.operator_codes if op.custom_code]
    refused += [name for name in op_names(content) if name in RANDOM_OPS]
    if refused:
        raise ZooError(
            f"the {mode} TFLite file would contain {', '.join(sorted(refused))}; edge exports allow "
            "builtin, non-random ops only"
        )


def compact(content):
    """`content` without what interpreters never read: the names of intermediate tensors (inputs
    and outputs keep theirs), empty quantization tables, and one empty buffer per tensor that
    has no data (they all point at the schema's empty buffer 0 instead); written with each
    repeated table stored once (`_serialize_shared`).

    Interpreters address tensors by index and signatures by their own names, so this changes no
    output (tested). It matters where ops repeat per time step: the LSTM preset's int8 file
    shrinks from 736 KB to 383 KB without names and empty tables, and to 250 KB shared.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    buffers = [model.buffers[0]]
    new_index = {}

    def kept_buffer(index):
        if index not in new_index:
            new_index[index] = len(buffers)
            buffers.append(model.buffers[index])
        return new_index[index]

    for subgraph in model.subgraphs:
        ends = {*subgraph.inputs, *subgraph.outputs}
        for index, tensor in enumerate(subgraph.tensors):
            if index not in ends:
                tensor.name = None
            quantization = tensor.quantization
            if quantization is not None and not any(
                value is not None and len(value) for value in (quantization.scale, quantization.min, quantization.max)
            ):
                tensor.quantization = None
            data = model.buffers[tensor.buffer].data
            tensor.buffer = kept_buffer(tensor.buffer) if data is not None and len(data) else 0
    for entry in model.metadata or ():
        entry.buffer = kept_buffer(entry.buffer)
    model.buffers = buffers
    return _serialize_shared(model)


class _SharingBuilder(flatbuffers.Builder):
    """A flatbuffer builder that writes each distinct numeric vector once (tensor shapes and the
    scales and zero points of quantization tables); every later table refers to that copy."""

    def __init__(self):
        super().__init__(1024)
        self._vectors = {}

    def CreateNumpyVector(self, x):  # flatbuffers.Builder's method, overridden
        key = (x.dtype.str, x.shape, x.tobytes())
        if key not in self._vectors:
            self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]


class _PackedOnce:
    """A table written once however many tensors or operators refer to it."""

    def __init__(self, table):
        self.table, self.offset = table, None

    def Pack(self, builder):  # the name the schema's object API calls
        if self.offset is None:
            self.offset = self.table.Pack(builder)
        return self.offset


def _serialize_shared(model):
    """`model`'s .tflite bytes, with identical vectors and tables (tensor shapes, quantization
    parameters, tensors, operator options) stored once. Unrolled graphs repeat them per time
    step and signature (an int8 LSTM's encode and decode: 1,073 quantization tables, 292
    distinct); a flatbuffer may refer to one table from many places, and interpreters only
    read them.
    """
    shared = {}

    def one_copy(table):
        if table is None:
            return None
        key = (type(table).__name__, *(
            (name, value.dtype.str, value.tobytes()) if isinstance(value, np.ndarray) else (name, repr(value))
            for name, value in sorted(vars(table).items())
        ))
        return shared.setdefault(key, _PackedOnce(table))

    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.quantization = one_copy(tensor.quantization)
        # Tensors are addressed by their index in this list, so two entries may share one table.
        subgraph.tensors = [one_copy(tensor) for tensor in subgraph.tensors]
        for operator in subgraph.operators:
            operator.builtinOptions = one_copy(operator.builtinOptions)
    builder = _SharingBuilder()
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
