"""Which float16 files the GPU delegate takes whole: every shipped preset and every autoencoder type.

Not a test. Each shipped preset is exported as shipped in float16 (`aezoo export NAME --quantize
float16`); each autoencoder type of TYPES that has no shipped preset is built
small and untrained on 28 x 28 x 1 images, with its default backbone (whether the delegate takes an
op depends on the graph, not on the weights). The table gives each float16 file's size and the
verdict its metadata.json records (`files.model_float16.tflite.gpu_delegate`, see
`export.builder.gpu_delegate`): the ops the delegate lacks, in which signatures, and the model
option that avoids them. Latency on a phone's GPU is not measured: no mobile GPU is attached here.

Example:
    python -m recipes.tools.gpu_delegate_table          # prints the table
    python -m recipes.tools.gpu_delegate_table --docs   # also writes it into docs/phones.md
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from recipes.cli import arguments
from recipes.tools.doc_tables import write_docs_section

SHAPE = (28, 28, 1)
# type -> small options (the default backbone: conv; masked_ae: transformer)
TYPES = {
    "vq_vae": {"backbone_config": {"filters": [16, 32]}, "codebook_size": 32, "code_dim": 8},
    "cvae": {"backbone_config": {"filters": [16, 32]}, "latent_dim": 2, "num_classes": 10},
    "aae": {"backbone_config": {"filters": [16, 32]}, "latent_dim": 8},
    "wae": {"backbone_config": {"filters": [16, 32]}, "latent_dim": 8},
    "masked_ae": {"latent_dim": 8, "backbone_config": {"embed_dim": 32, "num_heads": 2, "num_layers": 1,
                                                       "ff_dim": 64, "patch_size": 7}},
}
FILE = "model_float16.tflite"


def _parser():
    parser = arguments.Parser(prog="python -m recipes.tools.gpu_delegate_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="keep the exports in this folder (default: a temp folder, removed)")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="also write the table into docs/phones.md (--readme: the same)")
    return parser


def models():
    """(label, model) of every shipped preset and every autoencoder type without one."""
    import keras

    import zoo
    from zoo import presets

    with_preset = set()
    for name in presets.list_presets():
        with_preset.add(presets.preset_info(name)["model"])
        yield f"preset `{name}`", zoo.from_preset(name)
    for name, options in TYPES.items():
        if name in with_preset:
            continue
        keras.utils.set_random_seed(0)
        yield f"type `{name}`", zoo.create(name, input_shape=SHAPE, **options)


def row(label, entry):
    """A table row from metadata.json's entry of the float16 file."""
    from export.builder.exporter import format_size

    verdict = entry["gpu_delegate"]
    if verdict["compatible"]:
        return f"| {label} | {format_size(entry['size_bytes'])} | takes every op | - | - |"
    lacks = "; ".join(f"{op} ({', '.join(reason['signatures'])}: {reason['reason']})"
                      for op, reason in verdict["reasons"].items())
    return f"| {label} | {format_size(entry['size_bytes'])} | NO | {lacks} | {verdict['fix'] or 'none'} |"


def main(argv=None):
    """Exports every model in float16 and prints the table; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    import shutil

    from export import export_model, runtime

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="aezoo-gpu-"))
    rows = []
    try:
        for index, (label, model) in enumerate(models()):
            out = root / f"{index:02d}-{model.registry_name}"
            export_model(model, out, quantize="float16", verify_samples=8)
            entry = json.loads((out / runtime.METADATA_FILE).read_text())["files"][FILE]
            rows.append(row(label, entry))
            print(rows[-1], file=sys.stderr)
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    command = "`python -m recipes.tools.gpu_delegate_table`"  # --out keeps the exports, --docs writes: same table
    text = "\n".join([
        f"{command}: each model's `{FILE}` (batch 1), checked by `export.builder.gpu_delegate` as every export "
        "records it in metadata.json; presets as shipped, the other types small and untrained",
        "",
        "| model | float16 file | GPU delegate | ops it lacks (signatures: why) | model option that avoids them |",
        "|---|---|---|---|---|",
        *rows,
    ])
    print(text)
    if args.docs:
        write_docs_section("gpu-delegate", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
