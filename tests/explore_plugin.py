"""A plugin file for tests/test_explore.py: encoder and decoder ``mini``, an MLP pair around a custom Keras layer.

The layer (``explore_plugin>Gain``) is registered when a model is built, so a logged ``mini`` model
loads only in a process that loaded this file: a plugin model in the full sense.
"""

import vaekit

_GAIN = []


def gain_layer():
    """The ``Gain`` layer class (defined once, on first use: Keras is imported only when a model is built)."""
    if not _GAIN:
        import keras

        @keras.saving.register_keras_serializable(package="explore_plugin")
        class Gain(keras.layers.Layer):
            """x · g, with one trainable g per feature."""

            def build(self, input_shape):
                self.g = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="g")

            def call(self, x):
                return x * self.g

        _GAIN.append(Gain)
    return _GAIN[0]


def build_encoder(input_shape, latent_dim, units=16):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = gain_layer()()(keras.layers.Dense(units, activation="relu")(keras.layers.Flatten()(inputs)))
    return keras.Model(inputs, [keras.layers.Dense(latent_dim)(x), keras.layers.Dense(latent_dim)(x)], name="mini_encoder")


def build_decoder(latent_dim, output_shape, units=16):
    import math

    import keras

    inputs = keras.Input(shape=(latent_dim,))
    x = gain_layer()()(keras.layers.Dense(units, activation="relu")(inputs))
    x = keras.layers.Dense(math.prod(output_shape), activation="sigmoid")(x)
    return keras.Model(inputs, keras.layers.Reshape(tuple(output_shape))(x), name="mini_decoder")


@vaekit.hookimpl
def register_encoders(register):
    register("mini", build_encoder)


@vaekit.hookimpl
def register_decoders(register):
    register("mini", build_decoder)
