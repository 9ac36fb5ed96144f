"""Training an image autoencoder with a contrastive term on its code (SimCLR's, Chen et al. 2020).

Reconstruction alone spends the code on what costs the most pixels (outline, brightness,
texture); nothing asks it to separate a shirt from a pullover of the same shape. The term added
here asks the codes of two random views of one image (crop, shift, flip, contrast) to be nearer
each other, after a small projection head, than to the views of the batch's other images: the
code then says more of what the object is, which linear probes and few-label fine-tuning read.
The decoder still learns to give the image back (or to denoise or inpaint it), so what comes
out is the same autoencoder; the wrapper and its projection head only exist while training.
"""

import keras
from keras import ops

from zoo import losses
from zoo.autoencoder import Autoencoder
from zoo.errors import ZooError
from zoo.layers import OptimizerBuiltAtCompile, objective_test_step, objective_train_step


def random_views():
    """The augmentations SimCLR's views differ by, as Keras preprocessing layers for images in [0, 1]."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            # A zoom into 60-100% of each side, then a shift of up to 10%: a random crop at the input's size.
            keras.layers.RandomZoom((-0.4, 0.0), fill_mode="constant"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            keras.layers.RandomContrast(0.5, value_range=(0.0, 1.0)),
        ],
        name="views",
    )


@keras.saving.register_keras_serializable(package="zoo")
class ContrastiveTraining(OptimizerBuiltAtCompile, keras.Model):
    """Trains `autoencoder` on its compiled reconstruction loss + `weight` x NT-Xent of two views' codes.

    Compile it like the autoencoder (`compile(optimizer, loss=zoo.losses.bce)`) and fit it on
    (inputs, targets) pairs: the reconstruction loss compares the autoencoder's output for the
    inputs with the targets, and the views are drawn from the targets, the clean images when the
    inputs are corrupted (denoising, inpainting). Predicting with it is predicting with the
    autoencoder; keep `.autoencoder` once trained.

    Args:
        autoencoder: a plain zoo autoencoder of images (H, W, C) in [0, 1].
        weight: the contrastive term's weight beside the reconstruction loss.
        temperature: NT-Xent's temperature (smaller: harder negatives weigh more).
        projection_dim: width of the projection head's output, on which the term is computed.
        seed: seeds the views' random draws, with the optimizer's step count (see `_seed_views`).
    """

    def __init__(self, autoencoder, weight=0.1, temperature=0.2, projection_dim=64, seed=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(autoencoder, Autoencoder) or len(autoencoder.data_shape) != 3:
            shape = getattr(autoencoder, "data_shape", None)
            raise ZooError(
                f"a contrastive term needs a plain image autoencoder (inputs (H, W, C)); got "
                f"{type(autoencoder).__name__} with inputs {shape}; set train.contrastive_weight=0"
            )
        if autoencoder.output_activation != "sigmoid":  # RandomContrast clips its views to [0, 1]
            raise ZooError(
                f"a contrastive term draws its views from images in [0, 1], and {type(autoencoder).__name__} has "
                f"output_activation={autoencoder.output_activation!r}; use 'sigmoid' with images scaled to [0, 1]"
            )
        if weight <= 0 or temperature <= 0:
            raise ZooError(f"contrastive weight and temperature must be > 0, got {weight} and {temperature}")
        self.autoencoder = autoencoder
        self.weight, self.temperature, self.projection_dim = float(weight), float(temperature), int(projection_dim)
        self.seed = int(seed)
        self.views = random_views()
        # SimCLR's head: the term shapes the head's output, and the code before it keeps more
        # of what the views differ by (which the decoder needs). float32: it feeds the loss.
        self.projection = keras.Sequential(
            [
                keras.layers.Dense(4 * self.projection_dim, activation="relu", dtype="float32"),
                keras.layers.Dense(self.projection_dim, dtype="float32"),
            ],
            name="projection",
        )
        self.projection.build((None, autoencoder.latent_dim))
        self.loss_tracker = keras.metrics.Mean("loss")
        self.reconstruction_tracker = keras.metrics.Mean("reconstruction")
        self.contrastive_tracker = keras.metrics.Mean("contrastive")
        self.built = True

    def call(self, inputs, training=False):
        return self.autoencoder(inputs, training=training)

    def _seed_views(self):
        """Restarts the views' random draws from (seed, step): Keras does not save a random layer's
        state, so without this a resumed run would draw other views than the uninterrupted run."""
        step = ops.cast(self.optimizer.iterations, "int64") * 2  # each layer draws twice a step (two views)
        for index, state in enumerate(self.views.non_trainable_variables):  # one seed state per layer
            state.assign(ops.stack([ops.convert_to_tensor(self.seed + index, "int64"), step]))

    def _objective(self, data, training):
        self._seed_views()
        inputs, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = inputs if targets is None else targets
        reconstruction = self.compute_loss(
            x=inputs, y=targets, y_pred=self.autoencoder(inputs, training=training), sample_weight=sample_weight
        )
        views = ops.concatenate([self.views(targets, training=True), self.views(targets, training=True)], axis=0)
        projections = self.projection(self.autoencoder.encoder(views, training=training))
        contrastive = losses.nt_xent(projections, self.temperature)
        return ops.cast(reconstruction, "float32") + self.weight * contrastive, reconstruction, contrastive

    def _track(self, loss, reconstruction, contrastive):
        for tracker, value in zip(self.metrics, (loss, reconstruction, contrastive)):
            tracker.update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX.
        return objective_train_step(self, step_input, lambda data: self._objective(data, training=True), self._track)

    def test_step(self, *step_input):
        return objective_test_step(self, step_input, lambda data: self._objective(data, training=False), self._track)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.contrastive_tracker]

    def get_config(self):
        return {
            **super().get_config(),
            "autoencoder": keras.saving.serialize_keras_object(self.autoencoder),
            "weight": self.weight,
            "temperature": self.temperature,
            "projection_dim": self.projection_dim,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["autoencoder"] = keras.saving.deserialize_keras_object(config["autoencoder"])
        return cls(**config)
