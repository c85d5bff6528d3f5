"""A plain Keras 3 port of the notebook's VAE: the baseline vaekit is measured against.

The notebook built its loss with a symbolic ``vae.add_loss(...)``, which Keras 3 no longer
has; the closest plain port adds the same loss from inside a layer's ``call`` and trains
with an ordinary ``compile``/``fit``.  Architecture, λ = 500, reductions, Adam, batch size:
as in the notebook.  No vaekit code is used here.  Backend-agnostic (``keras.ops``), so it is the
baseline on TensorFlow, JAX and PyTorch alike.

:func:`tracked_vae` is the same model written the way the Keras docs suggest for reporting loss
terms: ``compute_loss`` overridden, one ``keras.metrics.Mean`` per term (what vaekit's single
vector tracker is measured against on GPUs).
"""

from __future__ import annotations

import keras
from keras import layers, ops


def _terms(x, x_hat, mean, log_std):
    kl = (ops.mean(ops.square(mean)) + ops.mean(ops.exp(log_std)) - ops.mean(log_std) - 1) / 2
    mse = ops.mean(ops.square(x - x_hat))
    return mse, kl


class NotebookLoss(layers.Layer):
    """Adds 500·MSE + KL (the notebook's reductions); returns x̂ unchanged."""

    def __init__(self, lam=500.0, **kwargs):
        super().__init__(**kwargs)
        self.lam = lam

    def call(self, inputs):
        x, x_hat, mean, log_std = inputs
        mse, kl = _terms(x, x_hat, mean, log_std)
        self.add_loss(self.lam * mse + kl)
        return x_hat


class Sampling(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(0)

    def call(self, inputs):
        mean, log_std = inputs
        return mean + keras.random.normal(ops.shape(mean), seed=self.seed) * ops.exp(log_std / 2)


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


class TrackedVAE(keras.Model):
    """The notebook's VAE with ``compute_loss`` overridden and a ``Mean`` tracker per term."""

    def __init__(self, encoder, decoder, lam=500.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.lam = encoder, decoder, lam
        self.sampling = Sampling()
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def call(self, x, training=False):
        mean, log_std = self.encoder(x, training=training)
        return self.decoder(self.sampling([mean, log_std]), training=training), mean, log_std

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        x_hat, mean, log_std = y_pred
        mse, kl = _terms(x, x_hat, mean, log_std)
        self.mse_tracker.update_state(mse)
        self.kl_tracker.update_state(kl)
        return self.lam * mse + kl


def tracked_vae(height=50, width=50, d=20):
    """:class:`TrackedVAE` around the notebook's encoder and decoder (uncompiled)."""
    _, encoder, decoder = notebook_vae(height, width, d)
    vae = TrackedVAE(encoder, decoder)
    vae(keras.ops.zeros((1, height, width, 1)))
    return vae


def evaluate_port(vae, x_test, batch_size=64):
    """The notebook's evaluation: (loss, mse) on x_test, KL = loss − 500·mse."""
    loss, mse = vae.evaluate(x_test, x_test, batch_size=batch_size, verbose=0)
    return {"test_loss": loss, "test_mse": mse, "test_kl": loss - 500 * mse}
