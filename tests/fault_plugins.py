"""A plugin file (loaded with ``--plugin``/``load_plugin_file``) of components that misbehave on purpose.

- loss ``slow-mse-kl``: mse-kl, but each batch from epoch ``slow_from_epoch`` (0-based) on takes
  ``seconds`` longer, so a test can signal a run while it is surely mid-training; same numbers as mse-kl.
- loss ``inf-at-batch``: mse-kl whose loss becomes +inf at training batch ``batch`` (1-based).
- encoder ``unsaveable``: the dense encoder behind a custom layer that Keras cannot serialise,
  so training works and logging the model fails.
- encoder ``lambda``: the dense encoder behind a ``keras.layers.Lambda`` whose Python code touches the
  file ``marker`` when it runs; training and logging work, and the logged model holds code.
- vocoder ``fails``: raises inside sample generation (after training).
- vocoder ``fails-once``: raises the first time (a transient failure), marking the file ``marker``;
  returns silence once ``marker`` exists.
- vocoder ``breaks-artifacts``: replaces the active run's artifact directory with a regular file (a disk
  that went away) and returns silence, so the next artifact upload fails.

The vocoders misbehave only inside an MLflow run: vaekit's pre-flight call (before the run starts)
gets silence, as from a vocoder that works.
"""

import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

import vaekit
from vaekit.default_plugins.losses import build_mse_kl


def build_slow(lambda_=500.0, slow_from_epoch=1, seconds=0.5):
    import keras

    base = build_mse_kl(lambda_)

    def nap(epoch):
        if float(epoch) >= slow_from_epoch:
            time.sleep(seconds)
        return np.float32(0.0)

    # A host call inside the compiled step: each backend has its own.
    if keras.backend.backend() == "jax":
        import jax

        def pause_for(epoch):
            return jax.pure_callback(nap, jax.ShapeDtypeStruct((), np.float32), epoch)
    else:
        import tensorflow as tf

        def pause_for(epoch):
            return tf.ensure_shape(tf.py_function(nap, [epoch], tf.float32), ())

    def loss(x, x_hat, z_mean, z_log_var, epoch):
        terms = base(x, x_hat, z_mean, z_log_var)
        return {**terms, "loss": terms["loss"] + pause_for(epoch)}

    return loss


#: The training-batch counter of each ``inf-at-batch`` loss built: a test reads how many batches ran.
INF_LOSS_CALLS = []


def build_inf(lambda_=500.0, batch=2):
    import tensorflow as tf

    base = build_mse_kl(lambda_)
    calls = tf.Variable(0, dtype=tf.int64, trainable=False)
    INF_LOSS_CALLS.append(calls)

    def loss(x, x_hat, z_mean, z_log_var):
        terms = base(x, x_hat, z_mean, z_log_var)
        if tf.executing_eagerly():  # vaekit's one probe call before training
            return terms
        n = calls.assign_add(1)
        return {**terms, "loss": terms["loss"] + tf.where(n >= batch, float("inf"), 0.0)}

    return loss


def build_unsaveable_encoder(input_shape, latent_dim):
    import keras

    from vaekit.default_plugins.dense import build_encoder

    class Opaque:
        factor = 1.0

    class Scale(keras.layers.Layer):  # takes an object Keras cannot put in a config: not serialisable
        def __init__(self, holder):
            super().__init__()
            self.holder = holder

        def call(self, x):
            return x * self.holder.factor

    inputs = keras.Input(shape=tuple(input_shape))
    z_mean, z_log_var = build_encoder(input_shape, latent_dim, units=64)(Scale(Opaque())(inputs))
    return keras.Model(inputs, [z_mean, z_log_var], name="unsaveable_encoder")


def build_lambda_encoder(input_shape, latent_dim, marker="lambda-ran"):
    import keras

    from vaekit.default_plugins.dense import build_encoder

    # A Python lambda: Keras saves its bytecode (a named function only by name).  The marker path is a
    # constant in that code (eval), since Keras cannot load a lambda's default arguments back.
    touch = keras.layers.Lambda(eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"))
    inputs = keras.Input(shape=tuple(input_shape))
    z_mean, z_log_var = build_encoder(input_shape, latent_dim, units=64)(touch(inputs))
    return keras.Model(inputs, [z_mean, z_log_var], name="lambda_encoder")


def _preflight(mel_db, audio):
    """Silence for vaekit's pre-flight check, which happens before the run starts; None inside a run."""
    import mlflow

    if mlflow.active_run() is None:
        return np.zeros((len(mel_db), audio.samples), dtype=np.float32)
    return None


def build_picky_encoder(input_shape, latent_dim, units=32):
    """The dense encoder, refusing an odd ``units`` when it is built: a check no declared range expresses,
    so the value passes option checking and the run fails in its own process."""
    if units % 2:
        raise ValueError(f"units must be even, got {units}")
    from vaekit.default_plugins.dense import build_encoder

    return build_encoder(input_shape, latent_dim, units=units)


def build_failing_vocoder(audio):
    def vocode(mel_db):
        if (silence := _preflight(mel_db, audio)) is not None:
            return silence
        raise RuntimeError("vocoder exploded")

    return vocode


def build_fails_once_vocoder(audio, marker="fails-once.marker"):
    def vocode(mel_db):
        if (silence := _preflight(mel_db, audio)) is not None:
            return silence
        if not Path(marker).exists():
            Path(marker).write_text("failed once")
            raise RuntimeError("transient vocoder failure")
        return np.zeros((len(mel_db), audio.samples), dtype=np.float32)

    return vocode


def build_breaking_vocoder(audio):
    def vocode(mel_db):
        import mlflow

        if (silence := _preflight(mel_db, audio)) is not None:
            return silence
        where = Path(urlparse(mlflow.active_run().info.artifact_uri).path)
        shutil.rmtree(where)
        where.write_text("not a directory any more")
        return np.zeros((len(mel_db), audio.samples), dtype=np.float32)

    return vocode


@vaekit.hookimpl
def register_losses(register):
    register("slow-mse-kl", build_slow)
    register("inf-at-batch", build_inf)


@vaekit.hookimpl
def register_encoders(register):
    register("unsaveable", build_unsaveable_encoder)
    register("lambda", build_lambda_encoder)
    register("picky", build_picky_encoder)


@vaekit.hookimpl
def register_vocoders(register):
    register("fails", build_failing_vocoder)
    register("fails-once", build_fails_once_vocoder)
    register("breaks-artifacts", build_breaking_vocoder)
