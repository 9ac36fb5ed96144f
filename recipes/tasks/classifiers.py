"""Classifiers more than one task trains: an autoencoder's encoder under a softmax head, and
the small CNN trained from scratch that the classify recipe compares against and the generate
recipe uses to label samples and embed them."""

import math

import keras

import zoo
from recipes.engine.run import fit_widths

HEAD = "classes"  # the softmax layer's name: its input is the classifier's penultimate features


def same_network(model, keep_weights):
    """A new model with `model`'s architecture, its weights copied (or freshly initialised)."""
    copy = type(model).from_config(model.get_config())
    if keep_weights:
        copy.set_weights(model.get_weights())
    return copy


def classifier(autoencoder, classes, head_weights=None, input_shape=None):
    """The autoencoder's encoder (input -> code) followed by a softmax layer over `classes`.

    `head_weights` (kernel, bias) initialise the softmax layer; default: Keras' random initialisation.
    `input_shape` (default the autoencoder's) is reshaped to the autoencoder's, e.g. (28, 28) rows
    for a network on (28, 28, 1) images.
    """
    head = keras.layers.Dense(classes, activation="softmax", dtype="float32", name=HEAD)
    inputs = keras.Input(input_shape or autoencoder.data_shape)
    shaped = inputs if input_shape is None else keras.layers.Reshape(autoencoder.data_shape)(inputs)
    model = keras.Model(inputs, head(autoencoder.encoder(shaped)), name="classifier")
    if head_weights is not None:
        head.set_weights(head_weights)
    return model


def cnn_classifier(input_shape, classes, latent_dim=32, filters=(16, 32), hidden_units=128):
    """The classify recipe's network trained from scratch: a conv autoencoder's encoder (two strided
    stages, a dense layer, a code of latent_dim) + softmax head; (H, W) inputs read as one channel.
    A dense width outside (latent_dim, input size), as on 8x8 images, is fitted between the two."""
    image_shape = tuple(input_shape) if len(input_shape) == 3 else (*input_shape, 1)
    network = zoo.create("conv_ae", input_shape=image_shape, latent_dim=latent_dim, filters=list(filters),
                         hidden_units=fit_widths(hidden_units, math.prod(image_shape), latent_dim))
    return classifier(network, classes, input_shape=None if len(input_shape) == 3 else tuple(input_shape))


def penultimate_features(model):
    """input -> the features `model`'s softmax head reads, as a model sharing its weights."""
    return keras.Model(model.inputs, model.get_layer(HEAD).input)
