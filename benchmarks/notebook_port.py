"""A plain Keras 3 port of the notebook's VAE: the baseline vaekit is measured against.

The notebook built its loss with a symbolic ``vae.add_loss(...)``, which Keras 3 no longer
has; the closest plain port adds the same loss from inside a layer's ``call`` and trains
with an ordinary ``compile``/``fit``.  Architecture, λ = 500, reductions, Adam, batch size:
as in the notebook.  No vaekit code is used here.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


class NotebookLoss(layers.Layer):
    """Adds 500·MSE + KL (the notebook's reductions) and tracks mse/kl; returns x̂ unchanged."""

    def __init__(self, lam=500.0, **kwargs):
        super().__init__(**kwargs)
        self.lam = lam

    def call(self, inputs):
        x, x_hat, mean, log_std = inputs
        kl = (tf.reduce_mean(tf.square(mean)) + tf.reduce_mean(tf.exp(log_std)) - tf.reduce_mean(log_std) - 1) / 2
        mse = tf.reduce_mean(tf.square(x - x_hat))
        self.add_loss(self.lam * mse + kl)
        return x_hat


class Sampling(layers.Layer):
    def call(self, inputs):
        mean, log_std = inputs
        return mean + tf.random.normal(tf.shape(mean)) * tf.exp(log_std / 2)


def notebook_vae(height=50, width=50, d=20):
    """The notebook's encoder, decoder and VAE (cells 53-55), Keras 3 syntax."""
    inp = keras.Input(shape=(height, width, 1))
    x = layers.Conv2D(40, (3, 3), activation="relu")(inp)
    x = layers.AveragePooling2D((2, 2))(x)
    x = layers.Conv2D(25, (3, 3), activation="relu")(x)
    x = layers.AveragePooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(800, activation="relu")(x)
    x = layers.Dense(60, activation="relu")(x)
    mean = layers.Dense(d, name="dense_mean")(x)
    log_std = layers.Dense(d, name="dense_log_std")(x)
    encoder = keras.Model(inp, [mean, log_std])

    z_in = keras.Input(shape=(d,))
    y = layers.Dense(60, activation="relu")(z_in)
    y = layers.Dense(800, activation="relu")(y)
    y = layers.Dense(11 * 11 * 25, activation="relu")(y)
    y = layers.Reshape((11, 11, 25))(y)
    y = layers.UpSampling2D((2, 2))(y)
    y = layers.Conv2DTranspose(40, (3, 3), activation="relu")(y)
    y = layers.UpSampling2D((2, 2))(y)
    out = layers.Conv2DTranspose(1, (3, 3), activation="relu")(y)
    decoder = keras.Model(z_in, out)

    x_in = keras.Input(shape=(height, width, 1))
    m, lv = encoder(x_in)
    x_hat = decoder(Sampling()([m, lv]))
    vae = keras.Model(x_in, NotebookLoss()([x_in, x_hat, m, lv]))
    vae.compile(optimizer="adam", metrics=["mse"])
    return vae, encoder, decoder


def evaluate_port(vae, x_test, batch_size=64):
    """The notebook's evaluation: (loss, mse) on x_test, KL = loss − 500·mse."""
    loss, mse = vae.evaluate(x_test, x_test, batch_size=batch_size, verbose=0)
    return {"test_loss": loss, "test_mse": mse, "test_kl": loss - 500 * mse}
