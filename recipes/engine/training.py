"""The training core shared by `aezoo train`, every recipe and fine-tuning.

What it adds to `model.fit`: a precision policy (mixed_float16 on a GPU by default), a
tf.distribute strategy (`recipes.engine.distribution`), data order and corruption noise that are pure
functions of (seed, epoch, step) (`recipes.engine.epoch_batches`), an atomic checkpoint every epoch that
`--resume` continues exactly (`recipes.engine.checkpoints`), early stopping on validation loss,
batch-norm statistics recomputed each epoch, and a clear stop when the loss turns NaN.
"""

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import keras
import numpy as np

import zoo
from recipes.engine.checkpoints import (
    CheckpointCallback,
    check_resumed_settings,
    config_changes,
    new_state,
    read_state,
    restore_best,
    write_history,
)
from recipes.engine.distribution import (
    PRECISIONS,
    STRATEGIES,
    cluster_worker,
    make_strategy,
    precision_policy,
)
from recipes.engine.epoch_batches import EpochBatches, stream_batches, with_transform
from zoo.contrastive import ContrastiveTraining
from zoo.backend import import_tensorflow
from zoo.errors import ZooError
from zoo.layers import batch_norm_layers

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
PRECISE_BN_EXAMPLES = 4096  # training inputs the batch-norm statistics are recomputed over each epoch
RANGE_ROUNDING = 1e-5  # how far outside [0, 1] float rounding (resizing, rescaling) may leave a sigmoid target


@dataclasses.dataclass
class TrainSettings:
    """How to train; every field is a `[train]` key in a recipe config.

    Args:
        epochs: passes over the training data.
        batch_size: global batch (split over replicas under a distribution strategy).
        learning_rate: the optimizer's (peak) learning rate.
        optimizer: "adam", or "adamw" (Adam with decoupled weight decay `weight_decay`).
        weight_decay: AdamW's decoupled weight decay per step, relative to the learning rate.
        lr_schedule: "constant", or "cosine" (decays to 0 over the run's steps).
        warmup_epochs: the learning rate ramps linearly from 0 over this many epochs (may be
            fractional; 0: no warm-up).
        gradient_clip_norm: gradients are rescaled to at most this global norm (0: no clipping).
        use_ema: keep an exponential moving average of the weights (Keras' `use_ema`), validate
            with it, and return it: the averaged weights of the best epoch.
        ema_momentum: the average's momentum (closer to 1: a longer memory).
        loss: reconstruction loss of plain autoencoders: "bce", "mse" or "psnr" (minus each image's
            PSNR: trains for the mean per-image PSNR the restoration recipes report); a VAE
            brings its own.
        contrastive_weight: > 0 adds SimCLR's contrastive term on the code of two random views
            of each image, with this weight, to an image autoencoder's reconstruction loss
            (`zoo.contrastive.ContrastiveTraining`); 0: reconstruction only.
        patience: epochs without validation improvement before stopping (0: never stop early);
            the best epoch's weights are kept.
        validation_fraction: share of the training split held out for validation.
        precision: "auto" (mixed_float16 on a GPU, float32 otherwise) or a Keras policy name.
        strategy: "auto" (mirrored over several GPUs, else default), "default", "mirrored",
            "multi_worker" (reads TF_CONFIG).
        seed: seeds weights, data order and noise.
        deterministic: force deterministic TF kernels (bitwise-repeatable GPU runs; slower).
        verbose: Keras progress output (1: a bar on a terminal, a line per epoch when stdout is
            redirected to a file or pipe; 2: always a line per epoch; 0: silent).
    """

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    gradient_clip_norm: float = 0.0
    use_ema: bool = False
    ema_momentum: float = 0.99
    loss: str = "bce"
    contrastive_weight: float = 0.0
    patience: int = 5
    validation_fraction: float = 0.1
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 0
    deterministic: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ZooError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ZooError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        zoo.losses.get(self.loss)
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ZooError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("seed", "patience"):  # NumPy's generators take no negative seed; patience 0 already means never stop
            if int(getattr(self, key)) < 0:
                raise ZooError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.verbose not in (0, 1, 2):
            raise ZooError(f"train.verbose must be 0, 1 or 2, got {self.verbose}")
        if not 0 <= self.validation_fraction < 1:
            raise ZooError(f"train.validation_fraction must be in [0, 1), got {self.validation_fraction}")
        for key, choices in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, key) not in choices:
                raise ZooError(f"train.{key} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        for key in ("learning_rate", "weight_decay", "warmup_epochs", "gradient_clip_norm", "contrastive_weight"):
            if float(getattr(self, key)) < 0 or not math.isfinite(getattr(self, key)):
                raise ZooError(f"train.{key} must be a finite number >= 0, got {getattr(self, key)}")
        if not 0 < self.ema_momentum < 1:
            raise ZooError(f"train.ema_momentum must be in (0, 1), got {self.ema_momentum}")


def seed_everything(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; `deterministic` also forces deterministic TF kernels.

    On the CPU the kernels used here already repeat bit for bit (the resume test checks it),
    so the slower deterministic mode is only needed for bitwise-repeatable GPU runs.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        import_tensorflow("train.deterministic").config.experimental.enable_op_determinism()


def make_optimizer(settings, steps_per_epoch):
    """The optimizer of `settings`: Adam or AdamW, the learning-rate schedule with its warm-up,
    global-norm gradient clipping and the weight average, for runs of `steps_per_epoch` steps an epoch.

    The schedule is a function of the optimizer's step count, which checkpoints hold, so a
    resumed run continues it where it stopped.
    """
    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    learning_rate = settings.learning_rate
    if settings.lr_schedule == "cosine" or warmup_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup_steps else settings.learning_rate,
            decay_steps=max(1, settings.epochs * steps_per_epoch - warmup_steps),
            alpha=0.0 if settings.lr_schedule == "cosine" else 1.0,  # alpha=1: no decay, a constant rate after warm-up
            warmup_target=settings.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    options = {
        "learning_rate": learning_rate,
        "global_clipnorm": settings.gradient_clip_norm or None,
        "use_ema": settings.use_ema,
        "ema_momentum": settings.ema_momentum,
    }
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=settings.weight_decay, **options)
    return keras.optimizers.Adam(**options)


def compile_model(model, settings, optimizer):
    """A plain autoencoder gets the reconstruction loss of `settings`, a VAE its own objective."""
    if isinstance(model, zoo.VAE):
        model.compile(optimizer=optimizer)
    else:
        model.compile(optimizer=optimizer, loss=zoo.losses.get(settings.loss))
    return model


def compile_classifier(model, settings, optimizer):
    """Sparse categorical cross-entropy and accuracy, for recipes that train a classifier (`compile_fn`)."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def recompute_batch_norm_statistics(model, batches):
    """Sets every BatchNormalization layer's moving mean and variance to the average of its batch
    statistics over `batches` (an iterable of input batches), under the model's current weights
    ("precise BN", Wu & Johnson, 2021). Each batch is weighted equally.

    Why: the moving averages (momentum 0.99) lag the weights by about a hundred steps, and
    evaluation then normalises with statistics the trained network never produced. A
    classifier fitted on 1% of the labels takes a few hundred steps in all, so its averages
    still hold much of their initial 0 and 1; a denoiser at learning rate 2e-3 moves its weights
    enough in a hundred steps that it scored 13.7 dB on its moving averages and 18.4 dB on
    recomputed ones.
    """
    norms = batch_norm_layers(model)
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    try:
        for index, batch in enumerate(batches):
            for norm in norms:
                norm.momentum = index / (index + 1)  # a cumulative average: the first batch replaces the old value
            model(batch, training=True)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes the batch-norm statistics (`recompute_batch_norm_statistics`) once an epoch,
    before validation or, without validation, before the checkpoint, so that validation, the
    best-epoch choice and every saved model use statistics of the weights they hold.

    Args:
        input_batches: a function returning a fresh iterable of input batches (the same ones each
            epoch: a fixed sample of the training inputs, transform applied).
    """

    def __init__(self, input_batches):
        super().__init__()
        self.input_batches = input_batches
        self.recomputed = False

    def on_epoch_begin(self, epoch, logs=None):
        self.recomputed = False

    def on_test_begin(self, logs=None):
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        self._recompute()

    def _recompute(self):
        if not self.recomputed:
            recompute_batch_norm_statistics(self.model, self.input_batches())
            self.recomputed = True


def precise_batch_norm_sample(batches, examples, batch_size):
    """A function returning the first full batches of `batches` (one epoch of `examples` as an
    `EpochBatches` or a tf.data stream of (inputs, targets)): PRECISE_BN_EXAMPLES inputs at most,
    at least one batch."""
    count = max(1, min(PRECISE_BN_EXAMPLES, examples) // batch_size)
    if is_tf_dataset(batches):
        return lambda: (inputs for inputs, _ in batches.take(count))
    return lambda: (batches[index][0] for index in range(count))


def tensorboard_logs(run_dir):
    """The TensorBoard callback writing run_dir/logs, where TensorFlow (which writes the logs) is installed."""
    if importlib.util.find_spec("tensorflow") is None:
        return []
    return [keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False)]


def is_tf_dataset(value):
    """Whether `value` is a tf.data.Dataset (without importing TensorFlow: one exists only once it is imported)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.data.Dataset)


def train(
    build_model,
    x,
    y=None,
    *,
    settings,
    run_dir,
    run_name,
    resume=False,
    transform=None,
    validation=None,
    compile_fn=None,
    callbacks=(),
):
    """Trains `build_model()` (called inside the precision policy and strategy scope) on (x, y).

    Args:
        build_model: returns an uncompiled zoo model.
        x, y: training inputs and targets (y defaults to x); x may be `ImageFiles` or `MappedRows`, streamed
            through tf.data with the same per-epoch order and transform seeds (y then None or
            labels as an array), or a finite, unbatched `tf.data.Dataset` of x or (x, label)
            elements (y None; see `zoo.dataset_examples.DatasetExamples`).
        settings: a `TrainSettings`.
        run_dir: where checkpoints/, logs/ and history.csv go.
        run_name: names the run (recipe or model) so `resume` refuses another run's folder.
        resume: continue from the last complete epoch in run_dir/checkpoints.
        transform: per-batch `f(x, y, rng) -> (inputs, targets)`, also applied to validation data
            (to streamed validation data batch by batch, each batch seeded by its number).
        validation: (x_val, y_val); default the last `validation_fraction` of (x, y).
        compile_fn: `f(model, settings, optimizer)` compiling the model with the optimizer of
            `settings` (default `compile_model`: the reconstruction loss); e.g.
            `compile_classifier` for cross-entropy.
        callbacks: more Keras callbacks for `fit`.

    Returns:
        (model with the best epoch's weights, list of per-epoch metric rows).

    Example:
        >>> model, history = train(lambda: zoo.create("conv_ae", (28, 28, 1), 16), x,
        ...                        settings=TrainSettings(epochs=5), run_dir="runs/a", run_name="conv_ae")
    """
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    x, y, validation, streaming, reconstructs = _training_data(x, y, validation, transform, settings)
    _check_batch_divides_among_workers(settings)
    state = read_state(run_dir, run_name) if resume else new_state(run_name, settings)
    seed_everything(settings.seed, settings.deterministic)
    strategy = make_strategy(settings.strategy)
    with precision_policy(settings.precision), strategy.scope():
        model = _compiled_model(build_model, x, settings, state, checkpoints, resume, compile_fn, reconstructs)
        ended_before = state["epoch"] >= settings.epochs or state.get("stopped_early")  # a resumed, finished run
        if not ended_before:
            checkpoint = _fit(model, x, y, validation, transform, settings, state, run_dir, run_name, callbacks,
                              streaming)
    if not ended_before:
        _check_finite_run(checkpoint, checkpoints, state)
        write_history(run_dir / "history.csv", state["history"])
    # Outside the strategy's scope: a multi-worker run hands back a model of this worker alone.
    return _finished(model, checkpoints, state, settings, run_name), state["history"]


def _training_data(x, y, validation, transform, settings):
    """(x, y, validation, streaming, reconstructs) of `train`: a tf.data stream wrapped, arrays checked,
    the validation data held out and transformed."""
    if is_tf_dataset(x):
        from zoo.dataset_examples import DatasetExamples

        x = DatasetExamples(x)
    streaming = not isinstance(x, np.ndarray)  # ImageFiles, MappedRows or DatasetExamples
    reconstructs = y is None  # the targets are the inputs (the split below makes y a copy of x)
    if not streaming:
        zoo.data.check_finite(x, "training data")
    x, y, validation = _split_validation(x, y, validation, settings, streaming)
    validation = _prepared_validation(validation, transform, settings)
    return x, y, validation, streaming, reconstructs


def _compiled_model(build_model, x, settings, state, checkpoints, resume, compile_fn, reconstructs):
    """The model `train` fits: resumed from its last checkpoint, or built and compiled anew."""
    build_trained = with_contrastive_term(build_model, settings)
    if resume:
        return _resumed_model(checkpoints, state, settings, build_trained)
    optimizer = make_optimizer(settings, math.ceil(len(x) / settings.batch_size))
    model = (compile_fn or compile_model)(build_trained(), settings, optimizer)
    if reconstructs:
        _check_output_range(model, x)
    return model


def _fit(model, x, y, validation, transform, settings, state, run_dir, run_name, callbacks, streaming):
    """Fits `model` from state's epoch to settings.epochs, checkpointing each epoch; returns the checkpoint callback."""
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    checkpoint = CheckpointCallback(checkpoints, run_name, settings, state)
    batches = stream_batches if streaming else EpochBatches
    model.fit(
        batches(x, y, settings.batch_size, settings.seed, state["epoch"], settings.epochs, transform),
        epochs=settings.epochs,
        initial_epoch=state["epoch"],
        steps_per_epoch=math.ceil(len(x) / settings.batch_size),
        shuffle=False,  # the batches already order each epoch; Keras would reshuffle across epochs
        validation_data=validation,
        validation_batch_size=None if streaming else settings.batch_size,
        callbacks=[*_averaging_callbacks(model, x, y, settings, transform, batches), checkpoint,
                   *tensorboard_logs(run_dir), *callbacks],
        # A progress bar redirected to a file is one long line of control codes.
        verbose=2 if settings.verbose == 1 and not sys.stdout.isatty() else settings.verbose,
    )
    return checkpoint


def _check_finite_run(checkpoint, checkpoints, state):
    """Refuses a run whose loss went NaN or infinite, naming the last good checkpoint."""
    if checkpoint.non_finite:
        last = f"{checkpoints / state['checkpoint']}" if state["checkpoint"] else "none yet"
        raise ZooError(
            f"{checkpoint.non_finite}: training stopped; last good checkpoint: {last}; "
            "lower train.learning_rate or use --precision float32"
        )


def _split_validation(x, y, validation, settings, streaming):
    """(x, y, validation): without `validation`, the last `validation_fraction` of (x, y) is held out."""
    if validation is not None or not settings.validation_fraction:
        return x, y, validation
    cut = len(x) - max(1, int(len(x) * settings.validation_fraction))
    if cut < 1:
        raise ZooError(
            f"{len(x) - cut} training example(s) and train.validation_fraction={settings.validation_fraction} "
            "leave none to train on; give more examples or set train.validation_fraction=0"
        )
    if streaming:
        return x[:cut], None if y is None else y[:cut], (x[cut:], None if y is None else y[cut:])
    y_all = x if y is None else y
    return x[:cut], y_all[:cut], (x[cut:], y_all[cut:])


def _prepared_validation(validation, transform, settings):
    """Validation data with `transform` applied once, seeded by a stream no epoch uses; streamed data batched."""
    never_an_epoch = [settings.seed, 2**32 - 1]
    if validation is not None and not isinstance(validation[0], np.ndarray):
        batches = validation[0].examples(labels=validation[1]).batch(settings.batch_size)
        autotune = import_tensorflow("streaming validation data with tf.data").data.AUTOTUNE
        return with_transform(batches, transform, never_an_epoch).prefetch(autotune)
    if validation is not None and transform is not None:
        return transform(*validation, np.random.default_rng(never_an_epoch))
    return validation


def _check_batch_divides_among_workers(settings):
    if settings.strategy == "multi_worker":  # each worker takes an equal part of every batch
        workers = len(cluster_worker()[1])
        if settings.batch_size % workers:
            raise ZooError(f"batch size {settings.batch_size} does not divide among {workers} workers; choose a multiple of {workers}")


def _resumed_model(checkpoints, state, settings, build_trained):
    """The model of the run's last checkpoint, checked to be the one `build_trained` makes, with the same settings."""
    check_resumed_settings(state.get("settings"), settings, checkpoints)
    model = keras.models.load_model(checkpoints / state["checkpoint"])
    _check_resumed_model(model, build_trained, checkpoints)
    print(f"aezoo: resuming from {checkpoints / state['checkpoint']} (epoch {state['epoch']} of {settings.epochs} done)",
          file=sys.stderr)
    return model


def _averaging_callbacks(model, x, y, settings, transform, batches):
    """The weight-averaging callbacks, in order: the EMA swap, then precise batch-norm statistics."""
    # Validation sees the averaged weights; checkpoints keep the raw ones (and the average in the
    # optimizer's state) so that a resumed run continues exactly.
    ema = [keras.callbacks.SwapEMAWeights()] if settings.use_ema else []
    # After the EMA swap, so that validation uses the averaged weights' statistics. Not across
    # workers: each would recompute from its own process (Keras' averages stay).
    if settings.strategy == "multi_worker" or not batch_norm_layers(model):
        return ema
    sample = batches(x, y, settings.batch_size, settings.seed, 0, 1, transform)  # epoch 0's batches
    return [*ema, PreciseBatchNorm(precise_batch_norm_sample(sample, len(x), settings.batch_size))]


def _check_output_range(model, targets):
    """Refuses reconstruction targets outside [0, 1] for a sigmoid output, which cannot give them back
    (in-memory arrays; streamed images are in [0, 1], streamed series rows are not scanned)."""
    network = getattr(model, "autoencoder", model)  # under the contrastive term's wrapper
    network = getattr(network, "backbone", network)  # a VAE's
    if not isinstance(targets, np.ndarray) or getattr(network, "output_activation", None) != "sigmoid":
        return
    low, high = targets.min(), targets.max()
    if low < -RANGE_ROUNDING or high > 1 + RANGE_ROUNDING:
        # str of a NumPy scalar: the shortest digits that read back as that value, so 1.0000002 is not printed as 1
        raise ZooError(
            f"the training data lies in [{low!s}, {high!s}] but the model's sigmoid output gives values in [0, 1] only; "
            "scale it to [0, 1], or for standardised data create the model with output_activation='linear' and train with loss mse"
        )


def with_contrastive_term(build_model, settings):
    """`build_model`, its model wrapped to train with `settings.contrastive_weight`'s contrastive term (0: as it is)."""
    if not settings.contrastive_weight:
        return build_model
    return lambda: ContrastiveTraining(build_model(), weight=settings.contrastive_weight, seed=settings.seed)


def _check_resumed_model(resumed, build_model, checkpoints):
    """Refuses to continue a checkpointed zoo model other than the one `build_model` asks for (e.g.
    another latent_dim): the checkpoint's would otherwise train on silently."""
    if not hasattr(resumed, "registry_name") and not isinstance(resumed, ContrastiveTraining):
        return  # a functional model (a classifier): its config holds generated layer names (and building one may cost a probe fit)
    asked = build_model()

    def options(model):
        weight = model.weight if isinstance(model, ContrastiveTraining) else 0.0
        model = model.autoencoder if isinstance(model, ContrastiveTraining) else model
        # Keras numbers the names of models built in one process: not an option
        config = {k: v for k, v in model.get_config().items() if k != "name"}
        return {"model": getattr(model, "registry_name", None), **config, "train.contrastive_weight": weight}

    changed = config_changes(options(resumed), options(asked))
    if changed:
        raise ZooError(f"{checkpoints} holds another model ({changed}); resume with the options it was trained "
                       "with or choose another --out")


def _finished(model, checkpoints, state, settings, run_name):
    """The model a run hands back: the best epoch's weights; on a multi-worker run, in a model
    of this worker alone (one of the strategy predicts across the workers)."""
    model = restore_best(model, checkpoints, state, settings)
    if isinstance(model, ContrastiveTraining):  # its projection head only served the training
        model = model.autoencoder
    if settings.strategy != "multi_worker":
        return model
    local = keras.models.clone_model(model)
    local.set_weights(model.get_weights())
    # Workers that trained in step print the same line.
    index, workers = cluster_worker()
    weights_sum = sum(float(np.abs(w).astype("float64").sum()) for w in local.get_weights())
    print(f"aezoo: worker {index} of {len(workers)} trained {run_name}; sum of |weights| {weights_sum!r}", file=sys.stderr)
    return local
