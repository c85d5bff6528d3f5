"""Encoder and decoder ``dense``: a plain MLP pair, a baseline for ``conv2``.

Conditional (``condition=K``): the label's one-hot joins the flattened input of the encoder and z at the decoder's input.
"""

import vaekit


def build_encoder(input_shape, latent_dim, units=512, layers=2, activation="relu", condition=None):
    """Flatten → `layers` Dense layers (`units`, halving each time) → Dense μ and log σ²."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs)
    x, model_inputs = _with_label(x, inputs, condition)
    for i in range(layers):
        x = keras.layers.Dense(max(units >> i, latent_dim), activation=activation)(x)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(model_inputs, [z_mean, z_log_var], name="dense_encoder")


def _with_label(x, inputs, condition):
    """``(x, model inputs)``, with a one-hot label input of ``condition`` classes joined to ``x`` when given."""
    import keras

    if not condition:
        return x, inputs
    label = keras.Input(shape=(condition,), name="label")
    return keras.layers.Concatenate(name="with_label")([x, label]), [inputs, label]


def build_decoder(latent_dim, output_shape, units=512, layers=2, activation="relu", condition=None):
    """The encoder's mirror image: Dense layers up to `units` → sigmoid Dense → reshape to x̂."""
    import math

    import keras

    inputs = keras.Input(shape=(latent_dim,))
    x, model_inputs = _with_label(inputs, inputs, condition)
    for i in reversed(range(layers)):
        x = keras.layers.Dense(max(units >> i, latent_dim), activation=activation)(x)
    # Sigmoid: the data is normalised to [0, 1].
    x = keras.layers.Dense(math.prod(output_shape), activation="sigmoid")(x)
    outputs = keras.layers.Reshape(tuple(output_shape))(x)
    return keras.Model(model_inputs, outputs, name="dense_decoder")


#: ``layers=0`` is allowed (μ and log σ² straight from the flattened input); ``units`` halves per
#: layer (never below latent_dim), so huge values only cost memory: bounded where a layer would
#: no longer fit any accelerator.
DENSE_RANGES = {"units": {"min": 1, "max": 1_000_000}, "layers": {"min": 0, "max": 64}}


@vaekit.hookimpl
def register_encoders(register):
    register("dense", build_encoder, options=DENSE_RANGES)


@vaekit.hookimpl
def register_decoders(register):
    register("dense", build_decoder, options=DENSE_RANGES)
