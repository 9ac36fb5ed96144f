"""LSTM autoencoder for (time, features) sequences: LSTM encoder -> code -> repeated -> LSTM decoder."""

import keras

from zoo.autoencoder import Autoencoder, check_hidden_widths, whole_numbers
from zoo.layers import float32_policy, repeat_layer
from zoo.registry import register_model


def lstm_networks(input_shape, latent_dim, units, unroll, dtype, repeat="tile", bidirectional=False):
    """(trunk, decoder) for `LSTMAutoencoder`; `units` lists the stacked LSTM widths, input side first."""
    steps, channels = input_shape
    inputs = keras.Input(input_shape)
    h = inputs
    for i, width in enumerate(units):
        last = i == len(units) - 1
        lstm = keras.layers.LSTM(width, return_sequences=not last, unroll=unroll, dtype=dtype, name=f"lstm_{i}")
        # Each direction has `width` units; their outputs are concatenated.
        h = (keras.layers.Bidirectional(lstm, dtype=dtype, name=f"bidirectional_{i}") if bidirectional else lstm)(h)
    trunk = keras.Model(inputs, h, name="encoder_trunk")

    codes = keras.Input((latent_dim,))
    # The code is repeated once per time step: the decoder unrolls it back into a sequence.
    h = repeat_layer(repeat, steps, dtype)(codes)
    for i, width in enumerate(reversed(units)):
        h = keras.layers.LSTM(width, return_sequences=True, unroll=unroll, dtype=dtype, name=f"decoder_lstm_{i}")(h)
    logits = keras.layers.Dense(channels, dtype=float32_policy(dtype), name="logits")(h)
    return trunk, keras.Model(codes, logits, name="decoder")


@register_model("lstm_ae")
class LSTMAutoencoder(Autoencoder):
    """Sequence autoencoder; images work too as (rows, columns) sequences.

    Args:
        input_shape: (time_steps, features).
        latent_dim: code width M.
        units: widths of the stacked encoder LSTMs (one number: one LSTM; the decoder mirrors them); the last is N.
        unroll: unroll the recurrence (longer graphs, no loop op: used for edge export).
        output_activation: "sigmoid" (data in [0, 1]) or "linear" (standardised series).
        repeat: how the decoder repeats the code per step: "tile" (RepeatVector) or "broadcast"
            (a broadcasting multiply: the same values and weights, and no TILE op, which
            TensorFlow Lite Micro lacks).
        bidirectional: each encoder LSTM also reads the sequence backwards (Bidirectional,
            outputs concatenated: the hidden width N is 2 x units[-1]); the decoder stays causal.

    Example:
        >>> model = zoo.create("lstm_ae", input_shape=(28, 28), latent_dim=16, units=(64,))
        >>> model.compile("adam", loss="mse"); model.fit(x, x)
    """

    input_rank = 2

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        units=(64,),
        unroll=False,
        output_activation="sigmoid",
        repeat="tile",
        bidirectional=False,
        **kwargs,
    ):
        super().__init__(input_shape, latent_dim, output_activation, **kwargs)
        self.units = whole_numbers("units", units, "[64]")
        self.bidirectional = bool(bidirectional)
        check_hidden_widths([self.units[-1] * (1 + self.bidirectional)], self.input_size, self.latent_dim, "units")
        self.unroll, self.repeat = bool(unroll), repeat
        self._attach(
            *lstm_networks(
                self.data_shape, self.latent_dim, self.units, self.unroll, self.dtype_policy, self.repeat, self.bidirectional
            )
        )

    def family_config(self):
        return {"units": list(self.units), "unroll": self.unroll, "repeat": self.repeat, "bidirectional": self.bidirectional}
