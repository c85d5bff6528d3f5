"""Training throughput: ``vaekit run``'s training loop vs a hand-written ``keras.Model.fit``.

Both train the notebook's model (conv VAE, 50×50, d = 20, λ·MSE + KL with λ = 500, Adam 1e-3)
on the same data at the same batch size, for the same epochs, in this process, alternating
(baseline, vaekit, baseline, vaekit, ...) so load on the machine hits both alike.

- vaekit: the model built as ``vaekit run`` builds it, trained by :func:`vaekit.run.fit` (the
  loop ``vaekit run`` uses: its callbacks, per-epoch MLflow logging to a throw-away sqlite store).
- baseline: ``benchmarks/notebook_port.py``, the plain Keras 3 port of the notebook (its loss
  added from a layer, ``compile(Adam, metrics="mse")``), ``fit(verbose=0)``, timed the same way.

Both are timed around the ``fit`` call (first epoch's tracing included): samples/s by wall
clock, and samples per CPU-second of this process (less sensitive to other load on a shared
machine).  Best and median of ``--repeats``; the ratio vaekit / baseline (target ≥ 1.0).
``--precision`` and ``--jit-compile`` apply to both (for GPU machines).

    python benchmarks/train.py                       # 1024 clips, 3 epochs, batch 64, 4 repeats
    python benchmarks/train.py --precision mixed_bfloat16 --jit-compile
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from notebook_port import notebook_vae  # noqa: E402  the plain Keras 3 port of the notebook


def timed_fit(fit):
    """(wall seconds, CPU seconds of this process, all threads) of ``fit()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fit()
    return time.perf_counter() - wall, time.process_time() - cpu


def baseline(x, args) -> tuple[float, float]:
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(args.precision)
    try:
        model, _, _ = notebook_vae()
        # The notebook's compile (Adam, metrics="mse"), with this run's XLA choice.
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["mse"],
                      jit_compile="auto" if args.jit_compile is None else args.jit_compile)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return timed_fit(lambda: model.fit(x[..., None], x[..., None], batch_size=args.batch_size, epochs=args.epochs,
                                       shuffle=True, verbose=0))


def vaekit_fit(data_dir: Path, store: str, args) -> tuple[float, float]:
    """vaekit's path up to training (components, data, model built as `vaekit run` builds it),
    then :func:`vaekit.run.fit` — the loop `vaekit run` trains with, callbacks and logging included."""
    import keras
    import mlflow

    from vaekit import distribute, tracking
    from vaekit.config import RunConfig
    from vaekit.run import build_model, fit, load_dataset, resolve_components

    cfg = RunConfig(data=str(data_dir), tracking_uri=store, epochs=args.epochs, batch_size=args.batch_size,
                    samples=0, validation_split=0.0, precision=args.precision, jit_compile=args.jit_compile)
    comps = resolve_components(cfg)
    ds = load_dataset(cfg, comps)
    strategy = distribute.make_strategy(cfg.strategy)
    keras.utils.set_random_seed(cfg.seed)
    model, _ = distribute.build(build_model, strategy, cfg, comps, ds)
    with tracking.tracked_run(tracking.check_store(store, "bench")):
        result = timed_fit(lambda: fit(model, ds, cfg, progress=False))
    mlflow.set_tracking_uri(None)
    return result


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
        n = args.clips * args.epochs
        base, ours = [], []  # (wall s, cpu s) per repeat
        for i in range(args.repeats):
            # Alternate which goes first, so a drift in machine load does not favour one side.
            pair = [lambda: base.append(baseline(x, args)), lambda: ours.append(vaekit_fit(data, store, args))]
            for step in (pair if i % 2 == 0 else pair[::-1]):
                step()
            print(f"  repeat {i + 1}: keras.fit {n / base[-1][0]:8.1f} samples/s   vaekit {n / ours[-1][0]:8.1f} samples/s"
                  f"   (per CPU-second: {n / base[-1][1]:6.1f} vs {n / ours[-1][1]:6.1f})")
    rate = lambda runs, k: [n / r[k] for r in runs]  # noqa: E731
    print(f"{'samples/s':<34}{'best':>9}{'median':>9}   per CPU-s {'best':>7}{'median':>9}")
    for label, runs in (("plain keras.Model.fit", base), ("vaekit (vaekit.run.fit)", ours)):
        w, c = rate(runs, 0), rate(runs, 1)
        print(f"{label:<34}{max(w):9.1f}{statistics.median(w):9.1f}             {max(c):7.1f}{statistics.median(c):9.1f}")
    w = max(rate(ours, 0)) / max(rate(base, 0))
    wm = statistics.median(rate(ours, 0)) / statistics.median(rate(base, 0))
    c = statistics.median(rate(ours, 1)) / statistics.median(rate(base, 1))
    print(f"ratio vaekit / keras: wall best {w:.3f}, wall median {wm:.3f}, per CPU-second median {c:.3f} (target >= 1.0)")


if __name__ == "__main__":
    main()
