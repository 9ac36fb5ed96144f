"""Reads what the export and the edge runtime need from a .tflite file, with the standard library only.

A .tflite file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs). This reader walks
the tables an interpreter will touch (operator codes, subgraphs, tensors, buffers, metadata,
signatures) and checks every offset against the file's length, so a truncated or foreign
file is refused here: `tflite_runtime` 2.14 crashes (segfault) on truncated files instead of
raising. It also returns the operator codes (Flex ops are custom ops named "Flex...") and the
converter's `min_runtime_version` metadata, which tells whether an older runtime can run it.
"""

import dataclasses
import re
import struct

FILE_IDENTIFIER = b"TFL3"

# Field slots of the schema's tables, in declaration order.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_METADATA, _MODEL_SIGNATURE_DEFS = 1, 2, 4, 6, 7
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 1, 2, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_NAME = 0, 3
_OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 1, 2
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS, _SIGNATURE_KEY = 0, 1, 2


class ModelFileError(ValueError):
    """The bytes are not a complete TFLite model (foreign, truncated or corrupt)."""


@dataclasses.dataclass(frozen=True)
class OperatorCode:
    """One operator kind used by a model: a builtin code (schema enum BuiltinOperator) or a custom name."""

    builtin_code: int
    custom_code: str | None  # Flex ops (TensorFlow kernels) are custom ops named "Flex<Op>"
    version: int


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `read_model_info` found in a .tflite file."""

    operator_codes: tuple
    metadata: dict  # name -> bytes
    signature_keys: tuple

    @property
    def min_runtime_version(self):
        """The oldest TFLite runtime that has every op version of the model, e.g. "2.17.0" (None if absent)."""
        raw = self.metadata.get("min_runtime_version")
        return raw.rstrip(b"\0").decode("ascii", "replace") if raw else None


class _Reader:
    """Bounds-checked access to FlatBuffer tables, vectors and strings in one buffer."""

    def __init__(self, data):
        self.data = data

    def need(self, start, end):
        """Refuses a reference to bytes [start, end) that the file does not have."""
        if start < 0 or end > len(self.data):
            raise ModelFileError(f"it ends at byte {len(self.data)} but refers to byte {end}: the file is truncated")

    def _unpack(self, fmt, pos):
        self.need(pos, pos + struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self):
        return self._unpack("<I", 0)

    def _field_pos(self, table, slot):
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        entry = 4 + 2 * slot
        if entry >= vtable_size:
            return None
        offset = self._unpack("<H", vtable + entry)
        return table + offset if offset else None

    def scalar(self, table, slot, fmt, default=0):
        pos = self._field_pos(table, slot)
        return default if pos is None else self._unpack(fmt, pos)

    def _indirect(self, pos):
        return pos + self._unpack("<I", pos)

    def vector(self, table, slot):
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self._field_pos(table, slot)
        if pos is None:
            return 0, 0
        start = self._indirect(pos)
        return start + 4, self._unpack("<I", start)

    def check_span(self, start, length, item_size):
        self.need(start, start + length * item_size)

    def tables(self, table, slot):
        start, length = self.vector(table, slot)
        self.check_span(start, length, 4)
        return [self._indirect(start + 4 * i) for i in range(length)]

    def bytes_field(self, table, slot):
        start, length = self.vector(table, slot)
        self.check_span(start, length, 1)
        return bytes(self.data[start : start + length])

    def string(self, table, slot):
        pos = self._field_pos(table, slot)
        return None if pos is None else self.bytes_field(table, slot).decode("utf-8", "replace")


def read_model_info(data):
    """Checks that `data` (the bytes of a .tflite file) is a complete TFLite model and describes it.

    Args:
        data: the file's bytes.

    Returns:
        ModelInfo with the operator codes, the metadata entries and the signature keys.

    Raises:
        ModelFileError: not a TFLite FlatBuffer, or truncated.

    Example:
        >>> info = read_model_info(Path("model_int8.tflite").read_bytes())
        >>> info.min_runtime_version, [op.custom_code for op in info.operator_codes if op.custom_code]
    """
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelFileError(f"it is not a TFLite model (no {FILE_IDENTIFIER.decode()} identifier at byte 4)")
    reader = _Reader(memoryview(data))
    model = reader.root()
    operator_codes = _operator_codes(reader, model)
    _check_subgraphs(reader, model)
    metadata = _metadata(reader, model, _buffers(reader, model))
    return ModelInfo(operator_codes, metadata, _signature_keys(reader, model))


def _operator_codes(reader, model):
    """The model's `OperatorCode`s."""
    return tuple(
        OperatorCode(
            # Codes above 127 live in `builtin_code`; the old byte field holds 127 for them.
            builtin_code=max(
                reader.scalar(code, _OPCODE_DEPRECATED_BUILTIN, "<b"), reader.scalar(code, _OPCODE_BUILTIN, "<i")
            ),
            custom_code=reader.string(code, _OPCODE_CUSTOM),
            version=reader.scalar(code, _OPCODE_VERSION, "<i", default=1),
        )
        for code in reader.tables(model, _MODEL_OPERATOR_CODES)
    )


def _check_subgraphs(reader, model):
    """Checks that every subgraph's inputs, outputs, tensors and operators lie inside the file."""
    for subgraph in reader.tables(model, _MODEL_SUBGRAPHS):
        for slot in (_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS):
            reader.check_span(*reader.vector(subgraph, slot), 4)
        for tensor in reader.tables(subgraph, _SUBGRAPH_TENSORS):
            reader.check_span(*reader.vector(tensor, _TENSOR_SHAPE), 4)
            reader.string(tensor, _TENSOR_NAME)
        for operator in reader.tables(subgraph, _SUBGRAPH_OPERATORS):
            for slot in (_OPERATOR_INPUTS, _OPERATOR_OUTPUTS):
                reader.check_span(*reader.vector(operator, slot), 4)


def _buffers(reader, model):
    """The bytes of every buffer held inside the FlatBuffer, after checking those held beyond it."""
    buffers = []
    for buffer in reader.tables(model, _MODEL_BUFFERS):
        # Models over 2 GB keep weights after the FlatBuffer, addressed by offset and size.
        offset, size = reader.scalar(buffer, _BUFFER_OFFSET, "<Q"), reader.scalar(buffer, _BUFFER_SIZE, "<Q")
        if offset:
            reader.check_span(offset, size, 1)
        buffers.append(reader.bytes_field(buffer, _BUFFER_DATA))
    return buffers


def _metadata(reader, model, buffers):
    """{metadata name: its buffer's bytes}."""
    metadata = {}
    for entry in reader.tables(model, _MODEL_METADATA):
        index = reader.scalar(entry, _METADATA_BUFFER, "<I")
        if index >= len(buffers):
            raise ModelFileError(f"metadata refers to buffer {index} of {len(buffers)}: the file is corrupt")
        metadata[reader.string(entry, _METADATA_NAME)] = buffers[index]
    return metadata


def _signature_keys(reader, model):
    """The signature keys, after checking each signature's input and output tables."""
    signature_keys = []
    for signature in reader.tables(model, _MODEL_SIGNATURE_DEFS):
        for slot in (_SIGNATURE_INPUTS, _SIGNATURE_OUTPUTS):
            reader.tables(signature, slot)
        signature_keys.append(reader.string(signature, _SIGNATURE_KEY))
    return tuple(signature_keys)


def parse_version(text):
    """"2.17.0" -> (2, 17, 0); a suffix such as "rc1" is ignored, missing parts count as 0."""
    parts = [int(match.group()) if (match := re.match(r"\d+", piece)) else 0 for piece in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))
