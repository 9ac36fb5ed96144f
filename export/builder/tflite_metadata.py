"""TFLite metadata inside each exported .tflite file, written and read with MediaPipe's metadata
library (`mediapipe.tasks.python.metadata`, the maintained successor of tflite-support's).

What a file carries (schema: mediapipe/tasks/metadata/metadata_schema.fbs): the model's name,
description, version, author and license; one SubGraphMetadata per subgraph, in subgraph order
(each signature is one subgraph), naming the signature and describing each input and output
tensor (its meaning, what each axis is, and its value range as `stats` min/max where it has
one); the model card as an associated file (zipped after the model, which interpreters never
read). Verification results stay in metadata.json beside the file.

Two gaps of the library as released are bridged here, both checked by reading the files back:
its populator accepts one SubGraphMetadata only (the schema holds one per subgraph), and its
wheels (0.10.35 and 1.2.x checked) lack the compiled helper that computes the minimum metadata
parser version, so the module fails to import; `min_parser_version` provides that helper from the
schema's version history (used only where the compiled one is missing).
"""

import importlib.metadata
import io
import json
import re
import sys
import tempfile
import types
import zipfile
from pathlib import Path

from export.builder import convert
from export.edge import runtime
from zoo.errors import ZooError

CARD_FILE = "MODEL_CARD.md"
AUTHOR = "autoencoder-zoo"
PROJECT_LICENSE = "Apache-2.0"  # a model card's `license:` front matter overrides it
INSTALL_HINT = "pip install 'autoencoder-zoo[metadata]' (MediaPipe's TFLite metadata writer)"
_VERSION_HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_METADATA_IDENTIFIER = b"M001"

# What each signature input and output holds (runtime.SIGNATURES names them).
TENSOR_MEANINGS = {
    "x": "the data to encode or reconstruct",
    "z": "a code, as encode gives it",
    "eps": "noise drawn from N(0, I), one row per example: sample decodes it",
    runtime.LABELS: "int32 class ids, the class each example is made as",
    "reconstruction": "the reconstruction of the data",
    "code": "the code of each example",
    "z_mean": "the mean of q(z|x), the encoder's Gaussian",
    "z_log_var": "the log-variance of q(z|x), the encoder's Gaussian",
    "sample": "a generated example: the decoder's output for the noise",
}
SIGNATURE_MEANINGS = {
    "reconstruct": "encode then decode: x -> reconstruction",
    "encode": "x -> code",
    "decode": "code z -> reconstruction",
    "encode_distribution": "x -> mean and log-variance of q(z|x)",
    "sample": "noise eps ~ N(0, I) -> a generated example",
}
_DATA_AXES = {1: ["features"], 2: ["steps", "features"], 3: ["height", "width", "channels"]}
_INDEX_AXES = {1: ["position"], 2: ["height", "width"]}


def require():
    """The metadata library's module, or a one-line ZooError naming the install."""
    try:
        from mediapipe.tasks.python.metadata import metadata
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("mediapipe.tasks.cc"):
            raise ZooError(f"embedding metadata in .tflite files needs MediaPipe ({error}): {INSTALL_HINT}") from None
        _provide_version_helper()
        from mediapipe.tasks.python.metadata import metadata
    return metadata


def describe(model, copy, signatures, input_range, mode, batch_size, card=None):
    """What `embed` writes into a file of `model` (its export `copy`): a JSON-able dict, the form
    `read` gives back and metadata.json records per file (`files.<name>.embedded_metadata`)."""
    sigmoid = getattr(model, "backbone", model).output_activation == "sigmoid"
    ranges = {"x": input_range, "reconstruction": [0.0, 1.0] if sigmoid else None, "eps": None, "z_mean": None,
              "z_log_var": None, "sample": [0.0, 1.0] if sigmoid else None, "code": None, "z": None}
    axes = {name: _DATA_AXES.get(len(model.data_shape), ["features"]) for name in ("x", "reconstruction", "sample")}
    axes.update({name: ["code"] for name in ("code", "z", "eps", "z_mean", "z_log_var")})
    meanings = dict(TENSOR_MEANINGS)
    if convert.has_discrete_codes(copy):
        indices = [0.0, float(copy.codebook_size - 1)]
        ranges.update(code=indices, z=indices)
        index_axes = _INDEX_AXES.get(len(copy.index_shape), ["position"])
        axes.update(code=index_axes, z=index_axes)
        meanings.update(code="int32 codebook indices, one per code position",
                        z="int32 codebook indices, as encode gives them")
    if convert.is_conditional(copy):
        ranges[runtime.LABELS], axes[runtime.LABELS] = [0.0, float(copy.num_classes - 1)], []

    def tensors(names):
        return {name: {"description": meanings[name], "dimension_names": ["batch", *axes[name]], "range": ranges[name]}
                for name in names}

    return {
        "name": model.registry_name,
        "description": f"{model.registry_name} ({type(model).__name__}), an autoencoder-zoo TFLite file ({mode}): "
                       f"signatures {', '.join(signatures)}; batch {batch_size}; latent_dim {model.latent_dim}. "
                       + ("int8 tensors: q = round(x / scale) + zero_point. " if mode == "int8" else "")
                       + "Run a signature by name; ranges are stats min/max.",
        "version": f"autoencoder-zoo {_package_version()}",
        "author": AUTHOR,
        "license": _card_license(card) or PROJECT_LICENSE,
        "model_card": CARD_FILE,
        "signatures": {name: {"description": SIGNATURE_MEANINGS[name],
                              "inputs": tensors(convert.input_names(copy, name)),
                              "outputs": tensors(runtime.SIGNATURES[name].outputs)}
                       for name in signatures},
    }


def embed(content, description, card_text):
    """`content` (a .tflite file's bytes) with `description` (from `describe`) as its metadata
    and `card_text` as its model card, written with MediaPipe's MetadataPopulator; the model
    itself is re-serialized compactly (`convert.compact`), so interpreters see the same graph."""
    metadata = require()
    buffer = _metadata_buffer(content, description)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(content)
        populator = _populator_class(metadata).with_model_file(str(path))
        populator.load_metadata_buffer(buffer)
        populator.load_associated_file_buffers({CARD_FILE: card_text.encode()})
        populator.populate()
        populated = path.read_bytes()
    # The populator re-packs the whole model, repeating the tables compact() stores once; its card
    # goes back in as it packed it (uncompressed: readers map entries in place), dated 1980-01-01
    # so that one model exports to the same bytes every time.
    with zipfile.ZipFile(io.BytesIO(populated)) as archive:
        packed = {name: archive.read(name) for name in archive.namelist()}
    result = io.BytesIO(convert.compact(populated))
    result.seek(0, io.SEEK_END)
    with zipfile.ZipFile(result, "a") as archive:
        for name, data in packed.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return result.getvalue()


def read(content):
    """(description, model card text) read back from a .tflite file with MediaPipe's
    MetadataDisplayer: the description in `describe`'s form."""
    displayer = require().MetadataDisplayer.with_model_buffer(bytes(content))
    written = json.loads(displayer.get_metadata_json())
    subgraphs = [_subgraph_from_json(entry) for entry in written["subgraph_metadata"]]
    description = {
        **{key: written.get(key) for key in ("name", "description", "version", "author", "license")},
        "model_card": written["associated_files"][0]["name"],
        "signatures": {name: entry for name, entry in subgraphs},
    }
    return description, displayer.get_associated_file_buffer(description["model_card"]).decode()


def generated_card(model, description):
    """A model card for a model without one (not from a preset): its description and config."""
    config = json.dumps(model.get_config(), indent=2, default=str)
    return f"# {model.registry_name}\n\n{description['description']}\n\n## Config\n\n```json\n{config}\n```\n"


def _subgraph_from_json(entry):
    def tensors(items):
        return {item["name"]: {"description": item.get("description"),
                               "dimension_names": item.get("dimension_names", []),
                               "range": [item["stats"]["min"][0], item["stats"]["max"][0]] if "stats" in item else None}
                for item in items}

    return entry["name"], {"description": entry.get("description"),
                           "inputs": tensors(entry.get("input_tensor_metadata", [])),
                           "outputs": tensors(entry.get("output_tensor_metadata", []))}


def _metadata_buffer(content, description):
    """The ModelMetadata flatbuffer: one SubGraphMetadata per subgraph of `content`, in subgraph
    order, its tensors in the subgraph's input and output order."""
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    meta = fb.ModelMetadataT()
    for key in ("name", "description", "version", "author", "license"):
        setattr(meta, key, description[key])
    meta.subgraphMetadata = []
    for signature, inputs, outputs in _subgraph_layout(content):
        entry = description["signatures"][signature]
        by_name = {**entry["inputs"], **entry["outputs"]}
        subgraph = fb.SubGraphMetadataT()
        subgraph.name, subgraph.description = signature, entry["description"]
        subgraph.inputTensorMetadata = [_tensor_metadata(fb, name, by_name[name]) for name in inputs]
        subgraph.outputTensorMetadata = [_tensor_metadata(fb, name, by_name[name]) for name in outputs]
        meta.subgraphMetadata.append(subgraph)
    card = fb.AssociatedFileT()
    card.name, card.description = description["model_card"], "the model card"
    card.type = fb.AssociatedFileType.DESCRIPTIONS
    meta.associatedFiles = [card]
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), _METADATA_IDENTIFIER)
    return builder.Output()


def _tensor_metadata(fb, name, tensor):
    result = fb.TensorMetadataT()
    result.name, result.description = name, tensor["description"]
    result.dimensionNames = tensor["dimension_names"]
    result.content = fb.ContentT()
    result.content.contentPropertiesType = fb.ContentProperties.FeatureProperties
    result.content.contentProperties = fb.FeaturePropertiesT()
    if tensor["range"] is not None:
        result.stats = fb.StatsT()
        result.stats.min, result.stats.max = [tensor["range"][0]], [tensor["range"][1]]
    return result


def _subgraph_layout(content):
    """[(signature, input names, output names)] per subgraph of a .tflite file, in subgraph order,
    names in the order of the subgraph's input and output tensors."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    layout = {}
    for i in range(model.SignatureDefsLength()):
        signature = model.SignatureDefs(i)
        subgraph = model.Subgraphs(signature.SubgraphIndex())
        names = {}
        for j in range(signature.InputsLength()):
            names[signature.Inputs(j).TensorIndex()] = signature.Inputs(j).Name().decode()
        for j in range(signature.OutputsLength()):
            names[signature.Outputs(j).TensorIndex()] = signature.Outputs(j).Name().decode()
        layout[signature.SubgraphIndex()] = (
            signature.SignatureKey().decode(),
            [names[subgraph.Inputs(k)] for k in range(subgraph.InputsLength())],
            [names[subgraph.Outputs(k)] for k in range(subgraph.OutputsLength())],
        )
    if sorted(layout) != list(range(model.SubgraphsLength())):
        raise ZooError(f"the TFLite file has {model.SubgraphsLength()} subgraphs and signatures for {sorted(layout)}; "
                       "metadata describes one signature per subgraph")
    return [layout[index] for index in sorted(layout)]


def _populator_class(metadata):
    """MediaPipe's MetadataPopulator, checking one SubGraphMetadata per subgraph (the schema's
    layout) where the released writer checks for exactly one."""

    class PerSubgraphPopulator(metadata.MetadataPopulator):
        def _validate_metadata(self, metadata_buf):
            from mediapipe.tasks.metadata import metadata_schema_py_generated as fb
            from mediapipe.tasks.metadata import schema_py_generated as schema

            if bytes(metadata_buf[4:8]) != _METADATA_IDENTIFIER:
                raise ValueError("the metadata buffer lacks the identifier M001")
            meta = fb.ModelMetadata.GetRootAs(metadata_buf, 0)
            model = schema.Model.GetRootAs(Path(self._model_file).read_bytes(), 0)
            if meta.SubgraphMetadataLength() != model.SubgraphsLength():
                raise ValueError(f"{meta.SubgraphMetadataLength()} SubgraphMetadata for "
                                 f"{model.SubgraphsLength()} subgraphs")
            for i in range(model.SubgraphsLength()):
                entry, subgraph = meta.SubgraphMetadata(i), model.Subgraphs(i)
                if (entry.InputTensorMetadataLength(), entry.OutputTensorMetadataLength()) != (
                        subgraph.InputsLength(), subgraph.OutputsLength()):
                    raise ValueError(f"subgraph {i}: tensor metadata does not match its inputs and outputs")

    return PerSubgraphPopulator


def _provide_version_helper():
    """Registers `min_parser_version` as the compiled helper the metadata module imports."""
    parts = _VERSION_HELPER.split(".")
    for depth in range(3, len(parts)):
        name = ".".join(parts[:depth])
        sys.modules.setdefault(name, types.ModuleType(name))
    helper = types.ModuleType(_VERSION_HELPER)
    helper.GetMinimumMetadataParserVersion = min_parser_version
    sys.modules[_VERSION_HELPER] = helper
    setattr(sys.modules[".".join(parts[:-1])], parts[-1], helper)


def min_parser_version(buffer):
    """The oldest metadata parser that reads `buffer`: the newest schema version (the history in
    metadata_schema.fbs) among the features it uses; 1.0.0 for what `embed` writes."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    meta = fb.ModelMetadataT.InitFromPackedBuf(bytes(buffer), 0)
    subgraphs = meta.subgraphMetadata or []
    tensors = [t for s in subgraphs for t in (s.inputTensorMetadata or []) + (s.outputTensorMetadata or [])]
    units = [u for s in subgraphs for u in (s.inputProcessUnits or []) + (s.outputProcessUnits or [])]
    options = {u.optionsType for t in tensors for u in (t.processUnits or [])} | {u.optionsType for u in units}
    files = list(meta.associatedFiles or []) + [f for s in subgraphs for f in s.associatedFiles or []]
    files += [f for t in tensors for f in t.associatedFiles or []]
    files += [f for t in tensors for u in t.processUnits or [] for f in _option_files(u.options)]
    files += [f for u in units for f in _option_files(u.options)]
    kinds = fb.ProcessUnitOptions
    versions = [
        ("1.5.0", any(s.customMetadata for s in subgraphs)),
        ("1.4.1", any(f.version for f in files)),
        ("1.4.0", any(f.type == fb.AssociatedFileType.SCANN_INDEX_FILE for f in files)),
        ("1.3.0", any(t.content and t.content.contentPropertiesType == fb.ContentProperties.AudioProperties
                      for t in tensors)),
        ("1.2.1", kinds.RegexTokenizerOptions in options),
        ("1.2.0", any(s.inputTensorGroups or s.outputTensorGroups for s in subgraphs)),
        ("1.1.0", bool(units) or bool({kinds.BertTokenizerOptions, kinds.SentencePieceTokenizerOptions} & options)),
        ("1.0.1", any(f.type == fb.AssociatedFileType.VOCABULARY for f in files)),
    ]
    return next((version for version, used in versions if used), "1.0.0")


def _option_files(options):
    return [f for key in ("vocabFile", "sentencePieceModel") for f in getattr(options, key, None) or []]


def _card_license(card):
    """The `license:` of a model card's YAML front matter (Hugging Face cards), or None."""
    if card is None:
        return None
    front = re.match(r"---\n(.*?)\n---", Path(card).read_text(), re.S)
    found = front and re.search(r"^license:\s*(\S+)\s*$", front.group(1), re.M)
    return found.group(1) if found else None


def _package_version():
    try:
        return importlib.metadata.version("autoencoder-zoo")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"
