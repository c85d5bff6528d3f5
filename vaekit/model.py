"""The VAE model: encoder → Sampling → decoder, trained with a plugin loss.

Follows the keras.io VAE example: a serializable :class:`Sampling` layer (no ``Lambda``,
so saved models load with ``safe_mode``) and a ``keras.Model`` subclass with its own
``train_step``/``test_step`` and one ``Mean`` tracker per loss term.  The loss is not
saved with the model: a loaded VAE can encode, sample and decode, not train (resuming
re-attaches the loss, see :meth:`VAE.set_loss`).
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from vaekit.errors import PluginError


@keras.saving.register_keras_serializable(package="vaekit")
class Sampling(keras.layers.Layer):
    """z = μ + exp(½·log σ²)·ε, ε ~ N(0, I): the reparameterisation trick."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="vaekit")
class VAE(keras.Model):
    """A variational autoencoder around a plugin encoder and decoder.

    ``encoder`` maps x to ``(z_mean, z_log_var)``; ``decoder`` maps z to x̂.  Call
    :meth:`set_loss` before ``compile``/``fit``.  Metrics are the loss's terms.
    """

    def __init__(self, encoder, decoder, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        # Training progress for losses that schedule terms (e.g. KL warm-up); set per epoch.
        self.epoch = tf.Variable(0.0, trainable=False, dtype="float32", name="epoch")
        self.loss_fn = None
        self._trackers: dict[str, keras.metrics.Mean] = {}
        self._loss_takes_epoch = False

    # -- contract --------------------------------------------------------------------
    def set_loss(self, loss_fn, sample_batch) -> list[str]:
        """Attach a plugin loss; probe it once on ``sample_batch`` to learn its term names.

        Raises :class:`PluginError` if it does not return a dict of scalars with ``"loss"``.
        """
        self.loss_fn = loss_fn
        try:
            params = inspect.signature(loss_fn).parameters
            self._loss_takes_epoch = "epoch" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._loss_takes_epoch = False
        terms = self.compute_terms(ops.convert_to_tensor(sample_batch), training=False)
        if not isinstance(terms, dict) or "loss" not in terms:
            got = sorted(terms) if isinstance(terms, dict) else type(terms).__name__
            raise PluginError(f"the loss must return a dict of scalar terms including 'loss', got {got}")
        for name, value in terms.items():
            if len(ops.shape(value)) != 0:
                raise PluginError(f"loss term {name!r} must be a scalar, got shape {tuple(ops.shape(value))}")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in terms}
        return list(terms)

    def compute_terms(self, x, training=False):
        z_mean, z_log_var = self.encoder(x, training=training)
        z = self.sampling([z_mean, z_log_var])
        x_hat = self.decoder(z, training=training)
        # Under a mixed-precision policy the layers compute in float16/bfloat16; the loss is float32.
        x, x_hat, z_mean, z_log_var = (ops.cast(t, "float32") for t in (x, x_hat, z_mean, z_log_var))
        if self._loss_takes_epoch:
            terms = self.loss_fn(x, x_hat, z_mean, z_log_var, epoch=self.epoch)
        else:
            terms = self.loss_fn(x, x_hat, z_mean, z_log_var)
        if isinstance(terms, dict):
            terms = {k: ops.cast(v, "float32") for k, v in terms.items()}
        return terms

    # -- keras -----------------------------------------------------------------------
    def call(self, x, training=False):
        z_mean, z_log_var = self.encoder(x, training=training)
        return self.decoder(self.sampling([z_mean, z_log_var]), training=training)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, training=True)
            # Gradients are summed over replicas, so each replica takes its share.
            loss = terms["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
            loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return self._update(terms)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 reduces the first distributed batch with strategy.reduce here, which
        # MultiWorkerMirroredStrategy rejects (keras-team/keras#20585).  The VAE is built before
        # fit (vaekit.run.build_model calls it) and compiled without Keras losses or metrics,
        # so the only thing left to build is the optimizer, which needs no batch.
        strategy = getattr(self, "_distribute_strategy", None)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and self.built:
            with strategy.scope():
                self._symbolic_build(data_batch=None)
            return
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._update(self.compute_terms(x, training=False))

    def _update(self, terms):
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        results = {name: t.result() for name, t in self._trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces a multi-worker step's logs with reduce("MEAN", axis=0), which fails on
            # scalars (keras-team/keras#20585): give each a length-1 axis to take the mean over.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    # -- generation ------------------------------------------------------------------
    def encode(self, x):
        """x → (z_mean, z_log_var) as NumPy arrays."""
        z_mean, z_log_var = self.encoder.predict(x, verbose=0)
        return np.asarray(z_mean, dtype="float32"), np.asarray(z_log_var, dtype="float32")

    def decode(self, z):
        """z → x̂ as a NumPy array."""
        return np.asarray(self.decoder.predict(z, verbose=0), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)
