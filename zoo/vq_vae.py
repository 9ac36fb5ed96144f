"""Vector-quantised VAE (van den Oord et al. 2017) on any zoo family's networks.

The backbone's code is cut into vectors of width code_dim (on the conv backbone: one per cell
of its spatial code grid, 7 x 7 for 28 x 28 images), each replaced by its nearest codebook
entry. Gradients pass the quantisation straight through; a commitment term keeps the encoder
near its entries, which learn by a codebook loss or by exponential moving averages (EMA).
`encode` gives integer indices (distances + ARG_MIN in TFLite), `decode` takes them (GATHER +
the decoder).
"""

import math

import keras
import numpy as np
from keras import ops

from zoo import losses
from zoo.autoencoder import whole_number
from zoo.backbone_model import BackboneModel
from zoo.conv import stage_grid
from zoo.errors import ZooError, unknown_name
from zoo.layers import custom_train_step
from zoo.registry import model_class, model_options, register_model
CODEBOOK_UPDATES = ("loss", "ema")
RESTART_BELOW = 0.01  # EMA assignments per step under which `restart_unused_codes` restarts a code
EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA counts, so an unused code divides by no zero


def conv_code_grid(input_shape, backbone_config):
    """(rows, columns) of the conv backbone's spatial code for these options."""
    options = {**model_options(model_class("conv_ae")), **backbone_config}
    stages = len(options["filters"]) if isinstance(options["filters"], (list, tuple)) else 1
    stage = stages - 1 if options["code_stage"] is None else whole_number("code_stage", options["code_stage"], minimum=0)
    return stage_grid(*input_shape[:2], min(stage, stages - 1), stages)


def nearest(distances):
    """Index of the smallest distance along the last axis, int32: ARG_MIN in TFLite (on JAX: jnp.argmin)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Keras' float argmin adds a sign-bit test (BITWISE_AND) that TFLite builtins lack.
        return tf.argmin(distances, axis=-1, output_type="int32")
    return ops.cast(ops.argmin(distances, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="zoo")
class VectorQuantizer(keras.layers.Layer):
    """A codebook of `codebook_size` vectors of width `code_dim`: nearest-entry indices, lookup,
    and the EMA / restart updates of its entries (float32 whatever the policy).

    Example:
        >>> quantizer = VectorQuantizer(512, 8)
        >>> indices = quantizer.indices(vectors)  # (..., 8) -> (...) int32
        >>> quantizer.lookup(indices).shape  # (..., 8)
    """

    def __init__(self, codebook_size, code_dim, ema_decay=None, **kwargs):
        super().__init__(**{**kwargs, "dtype": "float32"})
        self.codebook_size, self.code_dim, self.ema_decay = codebook_size, code_dim, ema_decay
        self.codebook = self.add_weight((codebook_size, code_dim), keras.initializers.VarianceScaling(1.0, "fan_out", "uniform"),
                                        trainable=ema_decay is None, name="codebook")
        # Assignments per step, averaged over steps: code usage for restarts, the EMA's counts.
        self.usage = self.add_weight((codebook_size,), "zeros", trainable=False, name="usage")
        if ema_decay is not None:
            self.vector_sums = self.add_weight((codebook_size, code_dim), "zeros", trainable=False, name="vector_sums")
        self.built = True

    def indices(self, vectors):
        """Index of the nearest entry (squared Euclidean distance) of each vector, int32."""
        vectors = ops.cast(vectors, "float32")
        distances = (ops.sum(ops.square(vectors), axis=-1, keepdims=True) - 2 * ops.matmul(vectors, ops.transpose(self.codebook))
                     + ops.sum(ops.square(self.codebook), axis=-1))
        return nearest(distances)

    def lookup(self, indices):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Keras' take wraps negative indices (LESS, SELECT), which TFLite Micro lacks; these are never negative.
            return tf.gather(self.codebook, indices)
        return ops.take(self.codebook, indices, axis=0)

    def call(self, vectors):
        return self.lookup(self.indices(vectors))

    def update(self, vectors, indices, restart, seed):
        """After a training step: the usage (and EMA entries) from this batch's `vectors` (n, code_dim)
        and their `indices`; with `restart`, entries used less than RESTART_BELOW restart at random vectors."""
        decay = 0.99 if self.ema_decay is None else self.ema_decay
        assigned = ops.one_hot(indices, self.codebook_size, dtype="float32")
        self.usage.assign(decay * self.usage + (1 - decay) * ops.sum(assigned, axis=0))
        if self.ema_decay is not None:
            self.vector_sums.assign(decay * self.vector_sums + (1 - decay) * ops.matmul(ops.transpose(assigned), vectors))
            total = ops.sum(self.usage)
            counts = (self.usage + EMA_EPSILON) / (total + self.codebook_size * EMA_EPSILON) * total
            self.codebook.assign(self.vector_sums / counts[:, None])
        if restart:
            picks = keras.random.randint((self.codebook_size,), 0, ops.shape(vectors)[0], seed=seed)
            unused = self.usage < RESTART_BELOW
            fresh = ops.take(vectors, picks, axis=0)
            self.codebook.assign(ops.where(unused[:, None], fresh, self.codebook.value))
            self.usage.assign(ops.where(unused, 1.0, self.usage.value))
            if self.ema_decay is not None:
                self.vector_sums.assign(ops.where(unused[:, None], fresh, self.vector_sums.value))

    def get_config(self):
        config = {**super().get_config(), "codebook_size": self.codebook_size, "code_dim": self.code_dim,
                  "ema_decay": self.ema_decay}
        config.pop("dtype", None)
        return config


@register_model("vq_vae")
class VQVAE(BackboneModel):
    """VQ-VAE: discrete codes, `encode` -> int indices of shape (batch, *index_shape), `decode` <- them.

    Args:
        input_shape: one example's shape, without the batch axis.
        latent_dim: width of the backbone's code, a multiple of code_dim (default: 16 vectors;
            on the conv backbone one vector per cell of its spatial code grid).
        codebook_size: entries in the codebook (at least 2).
        code_dim: width of each entry.
        backbone: "dense", "conv" (a spatial code unless backbone_config says code="dense"),
            "lstm" or "transformer".
        backbone_config: that family's options (see its class).
        commitment_weight: weight of ||z - sg(e)||^2, which keeps the encoder near its entries.
        codebook_update: "loss" (entries learn from ||sg(z) - e||^2) or "ema" (entries are moving
            averages of the vectors assigned to them, decay `ema_decay`).
        ema_decay: the EMA's decay with codebook_update="ema".
        restart_unused_codes: entries assigned less than 0.01 times per step (moving average)
            are moved onto random encoder vectors of the batch, so the codebook stays in use.
        reconstruction_loss: "bce" (from logits, data in [0, 1]) or "mse" (squared error summed).
        seed: seed of the restarts' draws.

    Example:
        >>> vq = zoo.create("vq_vae", input_shape=(28, 28, 1), codebook_size=64, code_dim=8, backbone="conv",
        ...                 codebook_update="ema", restart_unused_codes=True)
        >>> vq.compile(keras.optimizers.Adam(1e-3)); vq.fit(x, epochs=10)  # logs perplexity, codebook_usage
        >>> indices = vq.encode(x)  # (n, 7, 7) int32
        >>> images = vq.decode(indices)
    """

    type_name = "vq_vae"

    def __init__(
        self,
        input_shape,
        latent_dim=None,
        codebook_size=64,
        code_dim=8,
        backbone="conv",
        backbone_config=None,
        commitment_weight=0.25,
        codebook_update="loss",
        ema_decay=0.99,
        restart_unused_codes=False,
        reconstruction_loss="bce",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        backbone_config = self.checked_backbone_config(backbone_config, reconstruction_loss)
        self.codebook_size = whole_number("codebook_size", codebook_size, minimum=2)
        self.code_dim = whole_number("code_dim", code_dim)
        if codebook_update not in CODEBOOK_UPDATES:
            raise unknown_name("vq_vae codebook_update", codebook_update, CODEBOOK_UPDATES)
        if float(commitment_weight) < 0 or not 0 < float(ema_decay) < 1:
            raise ZooError(f"commitment_weight must be >= 0 and ema_decay in (0, 1), got {commitment_weight} and {ema_decay}")
        if backbone == "conv":
            backbone_config.setdefault("code", "spatial")
        grid = conv_code_grid(input_shape, backbone_config) if backbone_config.get("code") == "spatial" else None
        vectors = math.prod(grid) if grid else 16
        latent_dim = vectors * self.code_dim if latent_dim is None else whole_number("latent_dim", latent_dim)
        if grid and latent_dim != vectors * self.code_dim:
            raise ZooError(f"the vq_vae quantises each cell of the {grid[0]}x{grid[1]} code grid, so latent_dim must be "
                           f"{grid[0]}x{grid[1]}x{self.code_dim} = {vectors * self.code_dim}, got {latent_dim}; drop latent_dim")
        if latent_dim % self.code_dim:
            raise ZooError(f"latent_dim={latent_dim} must be a multiple of code_dim={self.code_dim}")
        self.attach_backbone(backbone, backbone_config, input_shape, latent_dim, reconstruction_loss, seed)
        self.index_shape = grid or (latent_dim // self.code_dim,)
        self.commitment_weight, self.codebook_update = float(commitment_weight), codebook_update
        self.ema_decay, self.restart_unused_codes = float(ema_decay), bool(restart_unused_codes)

        self.quantizer = VectorQuantizer(self.codebook_size, self.code_dim,
                                         self.ema_decay if codebook_update == "ema" else None, name="quantizer")
        self.restart_seed = keras.random.SeedGenerator(self.seed, name="restart_seed")
        self.trackers = [keras.metrics.Mean(name=name) for name in
                         ("loss", "reconstruction_loss", "commitment_loss", "codebook_loss", "perplexity", "codebook_usage")]
        self.built = True

    # --- the model -------------------------------------------------------------------------
    def encode_vectors(self, x, training=False):
        """The encoder's vectors before quantisation, float32 (batch, *index_shape, code_dim)."""
        return ops.reshape(self.backbone.encode(x, training=training), (-1, *self.index_shape, self.code_dim))

    def encode(self, x, training=False):
        """Codebook indices, int32 of shape (batch, *index_shape)."""
        return self.quantizer.indices(self.encode_vectors(x, training))

    def decode_vectors(self, vectors, training=False):
        """Reconstructions from (quantised) vectors of shape (batch, *index_shape, code_dim)."""
        return self.backbone.output_layer(self.backbone.decode_logits(ops.reshape(vectors, (-1, self.latent_dim)), training))

    def decode(self, indices, training=False):
        """Reconstructions from codebook indices of shape (batch, *index_shape)."""
        self.check_indices(indices)
        return self.decode_vectors(self.quantizer.lookup(indices), training)

    def check_indices(self, indices):
        got = tuple(indices.shape)
        if got[1:] != self.index_shape or not np.issubdtype(np.dtype(keras.backend.standardize_dtype(indices.dtype)), np.integer):
            raise ZooError(f"vq_vae decodes int indices of shape (batch, {', '.join(map(str, self.index_shape))}), "
                           f"got {keras.backend.standardize_dtype(indices.dtype)} {got}; pass what encode returns")
        if isinstance(indices, np.ndarray) and indices.size and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ZooError(f"indices must lie in [0, {self.codebook_size}), got {indices.min()} to {indices.max()}")

    def call(self, x, training=False):
        return self.decode_vectors(self.quantizer(self.encode_vectors(x, training)), training)

    # --- the objective ---------------------------------------------------------------------
    def step_losses(self, data, training):
        """(loss, reconstruction, commitment, codebook loss, vectors, indices, batch size) of a batch."""
        x, target = self.unpack(data)
        vectors = self.encode_vectors(x, training)
        indices = self.quantizer.indices(vectors)
        quantized = self.quantizer.lookup(indices)
        # Straight through: the decoder sees the entries, the encoder gets the decoder's gradient.
        passed = vectors + ops.stop_gradient(quantized - vectors)
        logits = self.backbone.decode_logits(ops.reshape(passed, (-1, self.latent_dim)), training)
        per_example = lambda values: ops.mean(ops.sum(ops.reshape(values, (ops.shape(x)[0], -1)), axis=-1))
        reconstruction = ops.mean(losses.reconstruction_error(target, logits, self.reconstruction_loss, self.backbone.output_layer))
        commitment = per_example(ops.square(vectors - ops.stop_gradient(quantized)))
        codebook = per_example(ops.square(ops.stop_gradient(vectors) - quantized))
        loss = reconstruction + self.commitment_weight * commitment
        if self.codebook_update == "loss":
            loss = loss + codebook
        vectors, indices = ops.reshape(vectors, (-1, self.code_dim)), ops.reshape(indices, (-1,))
        return loss, reconstruction, commitment, codebook, vectors, indices, ops.shape(x)[0]

    def track(self, loss, reconstruction, commitment, codebook, vectors, indices, batch_size):
        """Logs the losses and the codebook's perplexity and usage (share of entries used) in this batch."""
        shares = ops.mean(ops.one_hot(indices, self.codebook_size, dtype="float32"), axis=0)
        perplexity = ops.exp(-ops.sum(shares * ops.log(shares + 1e-10)))
        usage = ops.mean(ops.cast(shares > 0, "float32"))
        return super().track(loss, reconstruction, commitment, codebook, perplexity, usage, batch_size)

    def train_step(self, *step_input):
        # (data) on TensorFlow; (state, data) -> (logs, state) on JAX, the codebook's updates in the state.
        return custom_train_step(self, step_input, self._train)

    def _train(self, data, gradient_step):
        values = gradient_step(lambda: self.step_losses(data, training=True))
        vectors, indices = ops.stop_gradient(ops.cast(values[4], "float32")), values[5]
        if self.codebook_update == "ema" or self.restart_unused_codes:
            self.quantizer.update(vectors, indices, self.restart_unused_codes, self.restart_seed)
        return self.track(*values)

    def code_config(self):
        return {"codebook_size": self.codebook_size, "code_dim": self.code_dim}

    def type_config(self):
        return {
            "commitment_weight": self.commitment_weight,
            "codebook_update": self.codebook_update,
            "ema_decay": self.ema_decay,
            "restart_unused_codes": self.restart_unused_codes,
            **super().type_config(),
        }
