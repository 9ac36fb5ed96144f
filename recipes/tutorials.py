"""The networks a user would otherwise copy from the Keras tutorials, trained beside ours in a recipe.

A recipe that claims to do better than what people already use has to train that in the same
run, on the same data and epochs, with the tutorial's own settings (Adam 1e-3, batch 128, BCE).
"""

import dataclasses

import keras

TUTORIAL_SETTINGS = {
    "learning_rate": 1e-3,
    "batch_size": 128,
    "loss": "bce",
    "optimizer": "adam",
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "gradient_clip_norm": 0.0,
    "use_ema": False,
}


def tutorial_settings(settings):
    """`settings` (epochs, validation, seed, precision) with the tutorial's optimizer, batch and loss."""
    return dataclasses.replace(settings, **TUTORIAL_SETTINGS)


def conv_autoencoder_fits(input_shape):
    """Whether the tutorial conv autoencoder applies: images whose sides its two stride-2 convolutions halve twice."""
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
