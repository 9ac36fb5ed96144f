"""The networks a user would otherwise copy from the Keras tutorials, trained beside ours in a recipe.

A recipe that claims to do better than what people already use has to train that in the same
run, on the same data and epochs, with the tutorial's own settings (Adam 1e-3, batch 128, BCE).
`params.tutorial_baseline = false` leaves them out (quick runs).
"""

import dataclasses

import keras
from keras import ops

import zoo
from recipes.engine import training

TUTORIAL_SETTINGS = {
    "learning_rate": 1e-3,
    "batch_size": 128,
    "loss": "bce",
    "optimizer": "adam",
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "gradient_clip_norm": 0.0,
    "use_ema": False,
    "contrastive_weight": 0.0,
}


def tutorial_settings(settings):
    """`settings` (epochs, validation, seed, precision) with the tutorial's optimizer, batch and loss."""
    return dataclasses.replace(settings, **TUTORIAL_SETTINGS)


def conv_autoencoder_fits(input_shape):
    """Whether the tutorials' conv autoencoders (the reduce, denoising and VAE examples) apply: images
    whose sides their two stride-2 stages halve twice."""
    return len(input_shape) == 3 and input_shape[0] % 4 == 0 and input_shape[1] % 4 == 0


def conv_autoencoder(input_shape, latent_dim):
    """keras.io's convolutional autoencoder: Conv2D 32 and 64 (3x3, stride 2, ReLU), a Dense code,
    the mirrored Conv2DTranspose decoder and a sigmoid Conv2D output. The layer "code" is the code.

    Example:
        >>> model = conv_autoencoder((28, 28, 1), 16)
        >>> codes = keras.Model(model.input, model.get_layer("code").output).predict(x)
    """
    height, width, channels = input_shape
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    code = keras.layers.Dense(latent_dim, name="code")(keras.layers.Flatten()(h))
    h = keras.layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(code)
    h = keras.layers.Reshape((height // 4, width // 4, 64))(h)
    h = keras.layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32")(h)
    return keras.Model(inputs, outputs, name="tutorial_conv_autoencoder")


def code_model(model):
    """x -> code of a tutorial autoencoder."""
    return keras.Model(model.input, model.get_layer("code").output)


def denoiser(input_shape):
    """keras.io's denoising autoencoder (examples/vision/autoencoder): Conv2D 32 (3x3, ReLU) and
    MaxPooling 2, twice; two Conv2DTranspose 32 (stride 2, ReLU) and a sigmoid Conv2D output."""
    inputs = keras.Input(input_shape)
    h = inputs
    for _ in range(2):
        h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(2, padding="same")(h)
    for _ in range(2):
        h = keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid", dtype="float32")(h)
    return keras.Model(inputs, outputs, name="tutorial_denoiser")


def convnet_fits(input_shape):
    """Whether Keras' MNIST convnet applies: images of at least 10 pixels a side (its two unpadded 3x3
    convolutions and two poolings leave one pixel of a 10x10 image)."""
    return len(input_shape) == 3 and min(input_shape[:2]) >= 10


def convnet(input_shape, classes):
    """Keras' MNIST convnet (keras.io/examples/vision/mnist_convnet): Conv2D 32 and 64 (3x3, ReLU),
    each followed by MaxPooling 2, then Flatten, Dropout 0.5 and a softmax Dense layer."""
    inputs = keras.Input(input_shape)
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(32, 3, activation="relu")(inputs))
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(64, 3, activation="relu")(h))
    h = keras.layers.Dropout(0.5)(keras.layers.Flatten()(h))
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(h)
    return keras.Model(inputs, outputs, name="tutorial_convnet")


@keras.saving.register_keras_serializable(package="tutorials")
class VAE(keras.Model):
    """keras.io's VAE (examples/generative/vae). Encoder: Conv2D 32 and 64 (3x3, stride 2, ReLU),
    Dense 16 (ReLU), Dense z_mean and z_log_var; decoder: Dense 7x7x64 (ReLU), two Conv2DTranspose
    64 and 32 (stride 2, ReLU) and a sigmoid Conv2DTranspose. Loss: BCE summed over pixels
    (`summed_bce`, given to compile) + KL, both averaged over the batch.

    The decoder ends in logits and `call` applies the sigmoid (the same network), so that its
    likelihood can be computed from logits, as the zoo VAE's is: `encode_distribution` and
    `decode_logits` are the zoo VAE's names.

    Example:
        >>> vae = VAE((28, 28, 1), latent_dim=2)
        >>> vae.compile(keras.optimizers.Adam(1e-3), loss=summed_bce); vae.fit(x, x, batch_size=128)
    """

    def __init__(self, input_shape, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.data_shape, self.latent_dim = tuple(input_shape), int(latent_dim)
        height, width, channels = self.data_shape
        inputs = keras.Input(self.data_shape)
        h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
        h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
        h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(h))
        z_mean = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_mean")(h)
        z_log_var = keras.layers.Dense(self.latent_dim, dtype="float32", name="z_log_var")(h)
        self.encoder = keras.Model(inputs, [z_mean, z_log_var], name="encoder")

        codes = keras.Input((self.latent_dim,))
        h = keras.layers.Dense((height // 4) * (width // 4) * 64, activation="relu")(codes)
        h = keras.layers.Reshape((height // 4, width // 4, 64))(h)
        h = keras.layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)
        h = keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)
        logits = keras.layers.Conv2DTranspose(channels, 3, padding="same", dtype="float32", name="logits")(h)
        self.decoder = keras.Model(codes, logits, name="decoder")
        self.noise = keras.random.SeedGenerator()  # seeded by the run's seed (keras.utils.set_random_seed)

    def encode_distribution(self, x, training=False):
        """(z_mean, z_log_var) of q(z | x)."""
        return self.encoder(x, training=training)

    def decode_logits(self, z, training=False):
        return self.decoder(z, training=training)

    def call(self, x, training=False):
        """Reconstructions of x from one draw z ~ q(z | x); adds the KL term to the model's losses."""
        z_mean, z_log_var = self.encode_distribution(x, training=training)
        self.add_loss(ops.mean(zoo.losses.kl_divergence(z_mean, z_log_var)))
        eps = keras.random.normal(ops.shape(z_mean), seed=self.noise)
        return ops.sigmoid(self.decode_logits(zoo.vae.reparameterize(z_mean, z_log_var, eps), training=training))

    def get_config(self):
        return {**super().get_config(), "input_shape": list(self.data_shape), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="tutorials")
def summed_bce(y_true, y_pred):
    """The keras.io VAE's reconstruction loss: binary cross-entropy summed over pixels."""
    return zoo.losses.bce(y_true, y_pred, reduce="sum")


def compile_vae(model, settings, optimizer):
    """`training.train`'s compile_fn for `VAE`: its summed BCE (the KL term the model adds itself)."""
    model.compile(optimizer=optimizer, loss=summed_bce)
    return model


@dataclasses.dataclass(frozen=True)
class Tutorial:
    """A tutorial network as a recipe trains it beside ours.

    label: its column in the metrics; description: what it is, for the report's notes; needs:
    the inputs it takes, for the note when the data has others; fits: input_shape -> whether
    it takes them; build: (input_shape, **options) -> uncompiled model; compile_fn: as in
    `training.train` (None: the tutorial's BCE).
    """

    label: str
    description: str
    needs: str
    fits: object
    build: object
    compile_fn: object = None


IMAGES_BY_4 = "images with sides divisible by 4"
CONV_AUTOENCODER = Tutorial(
    "tutorial conv AE",
    "keras.io's convolutional autoencoder (Conv2D 32 and 64, stride 2, a Dense code, mirrored Conv2DTranspose "
    "decoder) with its BCE",
    IMAGES_BY_4, conv_autoencoder_fits, conv_autoencoder,
)
DENOISER = Tutorial(
    "tutorial denoiser",
    "keras.io's denoising autoencoder (Conv2D 32 and MaxPooling twice, two Conv2DTranspose 32 with stride 2, "
    "a sigmoid Conv2D) with its BCE",
    IMAGES_BY_4, conv_autoencoder_fits, denoiser,
)
CONVNET = Tutorial(
    "tutorial CNN",
    "Keras' MNIST convnet (Conv2D 32 and 64 each with MaxPooling, Dropout 0.5, softmax) from scratch on every "
    "label, with cross-entropy",
    "images of at least 10x10 pixels", convnet_fits, convnet, training.compile_classifier,
)
VAE_EXAMPLE = Tutorial(
    "tutorial VAE",
    "keras.io's VAE (Conv2D 32 and 64 with stride 2, Dense 16, z_mean and z_log_var; Dense 7x7x64 and "
    "Conv2DTranspose 64, 32 and 1) with its loss, BCE summed over pixels + KL, on the continuous pixel "
    "intensities as in the tutorial",
    IMAGES_BY_4, conv_autoencoder_fits, VAE, compile_vae,
)


def train(ctx, tutorial, results, x, y=None, settings=None, transform=None, **options):
    """Trains `tutorial`'s network as the recipe trains ours, in run_dir/tutorial: on the same (x, y)
    and `transform`, for the epochs of `settings` (default the run's), with the tutorial's
    optimizer, batch and loss.

    Returns the trained model, or None when params.tutorial_baseline is off or the network does
    not take these inputs (a note in `results` says so). `options` go to `tutorial.build`.
    """
    if not ctx.params["tutorial_baseline"]:
        return None
    input_shape = tuple(x.shape[1:])
    if not tutorial.fits(input_shape):
        results.notes.append(f"no {tutorial.label}: it needs {tutorial.needs}, got {input_shape}")
        return None
    model, _ = ctx.train(
        lambda: tutorial.build(input_shape, **options), x, y, tag="tutorial",
        settings=tutorial_settings(settings or ctx.settings), transform=transform, compile_fn=tutorial.compile_fn,
    )
    results.notes.append(
        f"{tutorial.label}: {tutorial.description}; trained on the same examples{' and corruptions' if transform else ''} "
        "for the same epochs as ours, with the tutorial's Adam 1e-3 and batch 128"
    )
    return model


def add_comparison(results, metric, ours, tutorial, difference=False):
    """Adds the row "<metric>, ours / <tutorial>" ("ours - <tutorial>" with `difference`, e.g. for dB)
    under the method `ours`."""
    values = results.metrics[metric]
    if difference:
        results.add(f"{metric}, ours - {tutorial.label}", {ours: values[ours] - values[tutorial.label]})
    else:
        results.add(f"{metric}, ours / {tutorial.label}", {ours: values[ours] / values[tutorial.label]})
