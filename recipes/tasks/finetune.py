"""Fine-tuning a preset: the pretrained network continues on new data; the same network from
scratch, trained for the same epochs on the same batches, is the baseline. The preset as it
is (no training on the new data) is reported too, so the gain from each step is visible.
Training streams large image folders; the scores are on the first `eval_examples` test images.

Image files (a folder, TFRecord files) are read at the preset's input size and colour mode
unless data.image_size / data.color_mode say otherwise, as Keras' `image_dataset_from_directory`
reads a folder at the size its model takes.
"""

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
    config = {k: v for k, v in info["config"].items() if k not in ("name", "trainable", "dtype")}

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
    return results, data
