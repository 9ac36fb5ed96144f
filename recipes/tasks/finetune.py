"""Fine-tuning a preset: the pretrained network continues on new data; the same network from
scratch, trained for the same epochs on the same batches, is the baseline. The preset as it
is (no training on the new data) is reported too, so the gain from each step is visible.
Training streams large image folders; the scores are on the first `eval_examples` test images.

The fine-tuned model becomes a preset in OUT/preset (its card records the parent preset, the
data and the metrics below), so `zoo.from_preset(OUT)` and `aezoo export OUT` take the run folder.

Image files (a folder, TFRecord files) are read at the preset's input size and colour mode
unless data.image_size / data.color_mode say otherwise, as Keras' `image_dataset_from_directory`
reads a folder at the size its model takes.
"""

import json

from recipes.engine.evaluation import first_examples, predict, psnr
from recipes.engine.report import Results, image_grid
from zoo import presets
from zoo.data import image_options_for
from zoo.errors import ZooError
from zoo.registry import create


def freeze_encoder(model):
    """Keeps the encoder (trunk and code head) as pretrained; only the decoder trains."""
    backbone = getattr(model, "backbone", model)
    backbone.encoder_trunk.trainable = False
    backbone.code_head.trainable = False
    return model


def run(ctx):
    if not ctx.from_preset:
        raise ZooError("the finetune recipe starts from a preset: add --from-preset NAME (see 'aezoo presets')")
    info = presets.preset_info(ctx.from_preset)
    pretrained = presets.from_preset(ctx.from_preset)
    shape, data_config = pretrained.data_shape, ctx.config["data"]
    image_options = image_options_for(shape, data_config["name"], data_config.get("data_dir"))
    data = ctx.load_data(for_model=info["model"], **image_options)
    if data.input_shape != shape:
        fix = (f"set data.image_size={image_options['image_size']} and data.color_mode={image_options['color_mode']}, "
               "or leave both out" if image_options else f"give it examples of shape {shape}")
        raise ZooError(f"preset {ctx.from_preset} takes inputs of shape {shape}, {data_config['name']} has {data.input_shape}; {fix}")
    freeze = freeze_encoder if ctx.params["freeze_encoder"] else (lambda m: m)
    config = {k: v for k, v in info["config"].items() if k != "dtype"}

    finetuned, _ = ctx.train(lambda: freeze(presets.from_preset(ctx.from_preset)), data.x_train, tag="finetune")
    scratch, _ = ctx.train(lambda: freeze(create(info["model"], **config)), data.x_train, tag="scratch")
    ctx.model = finetuned

    results, rows = Results(), []
    methods = {"fine-tuned preset": finetuned, "from scratch": scratch, "preset as is": pretrained}
    test, scored = first_examples(data.x_test, ctx.params["eval_examples"])
    outputs = {label: predict(model, test) for label, model in methods.items()}
    results.add("reconstruction MSE", {k: float(((v - test) ** 2).mean()) for k, v in outputs.items()})
    if test.min() >= 0:
        results.add("PSNR (dB)", {k: psnr(test, v) for k, v in outputs.items()})
    resized = {key: value for key, value in image_options.items() if key not in data_config}
    if resized:
        results.notes.append("images read as the preset takes them: " + ", ".join(f"data.{k}={v}" for k, v in resized.items()))
    results.notes.append(
        f"preset {ctx.from_preset} ({info['model']}); both trained {ctx.settings.epochs} epochs on the same batches"
        + ("; encoder frozen" if ctx.params["freeze_encoder"] else "") + f"; scored on {scored}"
    )
    rows = [("input", test), *outputs.items()]
    results.plots.append(image_grid(ctx.run_dir, "finetune_reconstructions", rows))
    save_finetuned_preset(ctx, finetuned, info, results.metrics)
    return results, data


def save_finetuned_preset(ctx, model, parent, metrics):
    """Writes OUT/preset: the fine-tuned model with its parent, data and the metrics measured on that data."""
    data_name = ctx.config["data"]["name"]
    command = json.loads((ctx.run_dir / "config.json").read_text())["command"]
    metadata = {
        "description": f"{ctx.from_preset} fine-tuned on {data_name} for {ctx.settings.epochs} epochs",
        "task": parent.get("task"),
        "dataset": data_name,
        "data": data_name,
        "command": command,
        "metrics": metrics,
        "parent": {"preset": str(ctx.from_preset), "sha256": parent["sha256"]},
    }
    # A resumed run writes its preset again: the folder belongs to this run.
    model.save_to_preset(ctx.run_dir / presets.RUN_PRESET, metadata=metadata, overwrite=True)
