"""Training throughput: ``vaekit run``'s training loop vs a hand-written ``keras.Model.fit``.

Both train the notebook's model (conv VAE, 50×50, d = 20, λ·MSE + KL with λ = 500, Adam 1e-3)
on the same data at the same batch size, for the same epochs, in this process, alternating
(baseline, vaekit, baseline, vaekit, ...) so load on the machine hits both alike.

- vaekit: :func:`vaekit.run.run` (the whole ``vaekit run`` path, logging to a throw-away
  sqlite store); its figure is the run's own ``train_samples_per_s`` metric (wall time of
  ``fit``, first epoch's tracing included).
- baseline: the notebook's layers in a minimal Keras 3 VAE (``train_step`` with the same
  loss), ``compile(Adam)``, ``fit(verbose=0)``, timed the same way.

Samples/s, best of ``--repeats`` for each; the ratio vaekit / baseline (target ≥ 1.0).
``--precision`` and ``--jit-compile`` apply to both (for GPU machines).

    python benchmarks/train.py                       # 1024 clips, 3 epochs, batch 64, 4 repeats
    python benchmarks/train.py --precision mixed_bfloat16 --jit-compile
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def notebook_vae(latent_dim=20, lam=500.0):
    """The notebook's model, hand-written in Keras 3 (its add_loss form no longer runs in Keras 3)."""
    import keras
    import tensorflow as tf
    from keras import layers

    inp = keras.Input(shape=(50, 50, 1))
    x = layers.Conv2D(40, (3, 3), activation="relu")(inp)
    x = layers.AveragePooling2D((2, 2))(x)
    x = layers.Conv2D(25, (3, 3), activation="relu")(x)
    x = layers.AveragePooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(800, activation="relu")(x)
    x = layers.Dense(60, activation="relu")(x)
    encoder = keras.Model(inp, [layers.Dense(latent_dim)(x), layers.Dense(latent_dim)(x)])
    zin = keras.Input(shape=(latent_dim,))
    x = layers.Dense(60, activation="relu")(zin)
    x = layers.Dense(800, activation="relu")(x)
    x = layers.Dense(11 * 11 * 25, activation="relu")(x)
    x = layers.Reshape((11, 11, 25))(x)
    x = layers.UpSampling2D((2, 2))(x)
    x = layers.Conv2DTranspose(40, (3, 3), activation="relu")(x)
    x = layers.UpSampling2D((2, 2))(x)
    decoder = keras.Model(zin, layers.Conv2DTranspose(1, (3, 3), activation="relu")(x))

    class PlainVAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.seed = keras.random.SeedGenerator(0)
            self.tracker = keras.metrics.Mean(name="loss")

        def call(self, x):
            mu, lv = self.encoder(x)
            return self.decoder(mu)

        def train_step(self, data):
            x = data[0]
            with tf.GradientTape() as tape:
                mu, lv = self.encoder(x, training=True)
                z = mu + keras.ops.exp(0.5 * lv) * keras.random.normal(keras.ops.shape(mu), dtype=mu.dtype, seed=self.seed)
                x_hat = keras.ops.cast(self.decoder(z, training=True), "float32")
                mu, lv = keras.ops.cast(mu, "float32"), keras.ops.cast(lv, "float32")
                mse = keras.ops.mean(keras.ops.square(x - x_hat))
                kl = 0.5 * keras.ops.mean(keras.ops.square(mu) + keras.ops.exp(lv) - 1.0 - lv)
                loss = self.optimizer.scale_loss(lam * mse + kl)
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.tracker.update_state(lam * mse + kl)
            return {"loss": self.tracker.result()}

        @property
        def metrics(self):
            return [self.tracker]

    return PlainVAE()


def baseline(x, args) -> float:
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(args.precision)
    try:
        model = notebook_vae()
        opt = keras.optimizers.Adam(1e-3)
        model.compile(optimizer=opt, jit_compile="auto" if args.jit_compile is None else args.jit_compile)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    start = time.perf_counter()
    model.fit(x[..., None], x[..., None], batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0)
    return len(x) * args.epochs / (time.perf_counter() - start)


def vaekit_run(data_dir: Path, store: str, args) -> float:
    from vaekit.config import RunConfig
    from vaekit.run import run

    cfg = RunConfig(data=str(data_dir), tracking_uri=store, epochs=args.epochs, batch_size=args.batch_size,
                    samples=0, validation_split=0.0, precision=args.precision, jit_compile=args.jit_compile)
    return run(cfg, progress=False).metrics["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()

    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((args.clips, 50, 50), dtype=np.float32)
    gpus = tf.config.list_physical_devices("GPU")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, GPUs: {len(gpus)}; TF {tf.__version__}; "
          f"{args.clips} clips × {args.epochs} epochs, batch {args.batch_size}, precision {args.precision}, "
          f"jit_compile {args.jit_compile if args.jit_compile is not None else 'auto'}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        np.save(data / "x_train.npy", x)
        np.save(data / "x_test.npy", x[:64])
        np.save(data / "min_values.npy", np.float32(-80))
        np.save(data / "max_values.npy", np.float32(20))
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        base, ours = [], []
        for i in range(args.repeats):
            # Alternate which goes first, so a drift in machine load does not favour one side.
            if i % 2 == 0:
                base.append(baseline(x, args))
                ours.append(vaekit_run(data, store, args))
            else:
                ours.append(vaekit_run(data, store, args))
                base.append(baseline(x, args))
            print(f"  repeat {i + 1}: keras.fit {base[-1]:8.1f} samples/s   vaekit {ours[-1]:8.1f} samples/s")
    print(f"{'':<28}{'best':>10}{'median':>10}")
    print(f"{'plain keras.Model.fit':<28}{max(base):10.1f}{statistics.median(base):10.1f}")
    print(f"{'vaekit run':<28}{max(ours):10.1f}{statistics.median(ours):10.1f}")
    print(f"ratio vaekit / keras (best): {max(ours) / max(base):.3f}   (median: "
          f"{statistics.median(ours) / statistics.median(base):.3f}; target >= 1.0)")


if __name__ == "__main__":
    main()
