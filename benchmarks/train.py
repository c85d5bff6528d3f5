"""Training throughput: ``vaekit run``'s training loop vs a hand-written ``keras.Model.fit``.

All variants train the notebook's model (conv VAE, 50×50, d = 20, λ·MSE + KL with λ = 500,
Adam 1e-3) on the same data at the same batch size, for the same epochs, in this process, taking
turns (the order rotates each repeat) so load on the machine hits all alike.

- baseline: ``benchmarks/notebook_port.py``, the plain Keras 3 port of the notebook (its loss
  added from a layer, ``compile(Adam, metrics="mse")``), ``fit(shuffle=True, verbose=0)``.
- port with trackers (``--tracked-port``): the same model with ``compute_loss`` overridden and a
  ``keras.metrics.Mean`` per term (mse, kl), as the Keras docs suggest for reporting loss terms.
- vaekit: the model built as ``vaekit run`` builds it, trained by :func:`vaekit.training.fit` (the
  loop ``vaekit run`` uses: its data pipeline, callbacks, per-epoch MLflow logging to a
  throw-away sqlite store, the per-epoch checkpoint snapshot and the checkpoint writes its policy
  makes), at vaekit's default ``--checkpoint-interval`` (60 s: a short benchmark run writes none)
  and, unless ``--no-every-epoch``, at ``--checkpoint-interval 0`` (a checkpoint written every epoch).

Two figures per variant, both samples/s by wall clock:

- *whole*: samples of all epochs / time of the ``fit`` call (the first epoch traces the train
  step: a fixed cost of ~1.5 s here);
- *steady*: samples of epochs 2..E / time from the end of epoch 1 to the end of epoch E, read
  from an epoch-end timestamp callback given to both (everything between epochs counts).

and samples per CPU-second of this process for the whole fit (less sensitive to other load on a
shared machine).  Ratios vaekit / baseline are taken per repeat (each vaekit fit against the
baseline fit of the same repeat) and summarised by their median and range (target ≥ 1.0).
``--backend``, ``--precision``, ``--jit-compile`` and ``--steps-per-execution`` apply to all.

    python benchmarks/train.py                       # 1024 clips, 4 epochs, batch 64, 6 repeats
    python benchmarks/train.py --clips 3000          # the default dataset's size
    python benchmarks/train.py --backend jax --batch-size 512 --tracked-port --no-every-epoch   # a GPU host
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


def epoch_clock():
    """A Keras callback that records wall-clock time at the end of each epoch (after vaekit's own)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        ends: list[float] = []

        def on_train_begin(self, logs=None):
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    return EpochClock()


def timed(fit, clock) -> dict:
    """Run ``fit()``; wall and CPU seconds of the call, the epoch-end times ``clock`` saw (from the
    call's start), and ``tail``: from the last epoch's end to the call's return (a checkpoint write
    still in flight is waited for there)."""
    wall, cpu = time.perf_counter(), time.process_time()
    writes = fit()
    end = time.perf_counter()
    return {"wall": end - wall, "cpu": time.process_time() - cpu, "ends": [t - wall for t in clock.ends],
            "tail": end - clock.ends[-1], "writes": writes}


def baseline(x, args, tracked: bool = False) -> dict:
    import keras
    from notebook_port import notebook_vae, tracked_vae  # the plain Keras 3 port of the notebook

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(args.precision)
    try:
        # The notebook's compile (Adam, metrics="mse"), with this run's XLA and steps-per-execution choices.
        model = tracked_vae() if tracked else notebook_vae()[0]
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=None if tracked else ["mse"],
                      jit_compile="auto" if args.jit_compile is None else args.jit_compile,
                      steps_per_execution=args.steps_per_execution)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    clock = epoch_clock()

    def fit():
        model.fit(x[..., None], None if tracked else x[..., None], batch_size=args.batch_size, epochs=args.epochs,
                  shuffle=True, verbose=0, callbacks=[clock])
        return 0

    return timed(fit, clock)


def vaekit_fit(data_dir: Path, store: str, args, checkpoint_interval: float | None) -> dict:
    """vaekit's path up to training (components, data, model built as `vaekit run` builds it),
    then :func:`vaekit.training.fit` — the loop `vaekit run` trains with, callbacks and logging included."""
    import mlflow

    from vaekit import components, distribute, tracking, training
    from vaekit.checkpoint import Checkpointer
    from vaekit.config import RunConfig

    cfg = RunConfig(data=str(data_dir), tracking_uri=store, epochs=args.epochs, batch_size=args.batch_size,
                    samples=0, validation_split=0.0, precision=args.precision, jit_compile=args.jit_compile,
                    backend=args.backend, steps_per_execution=args.steps_per_execution)
    if checkpoint_interval is not None:
        cfg.checkpoint_interval = checkpoint_interval
    comps = components.resolve(cfg)
    ds = components.load_dataset(cfg, comps)
    model, _ = training.build(cfg, comps, ds, distribute.make_placement(cfg.strategy, args.backend))
    checkpointer = Checkpointer(model, cfg.checkpoint_interval)
    clock = epoch_clock()

    def train():
        training.fit(model, ds, cfg, progress=False, checkpointer=checkpointer, callbacks=[clock])
        return checkpointer.writes

    with tracking.tracked_run(tracking.check_store(store, "bench")):
        result = timed(train, clock)
    mlflow.set_tracking_uri(None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--every-epoch", action=argparse.BooleanOptionalAction, default=True,
                        help="also time vaekit with a checkpoint written after every epoch")
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None,
                        help="Keras backend for every variant [KERAS_BACKEND, else tensorflow]")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--tracked-port", action="store_true",
                        help="also time the port reporting mse and kl through Mean trackers in compute_loss")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the steady figure leaves out the first epoch)")

    from vaekit import backend

    args.backend = backend.select(args.backend)  # before Keras is imported
    import keras

    from vaekit.config import RunConfig

    rng = np.random.default_rng(0)
    x = rng.random((args.clips, 50, 50), dtype=np.float32)
    devices = [str(d) for d in keras.distribution.list_devices()] if args.backend == "jax" else []
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; backend {args.backend} {backend.version(args.backend)}, "
          f"Keras {keras.__version__}{'; devices ' + ', '.join(devices) if devices else ''}; "
          f"{args.clips} clips × {args.epochs} epochs, batch {args.batch_size}, precision {args.precision}, "
          f"jit_compile {args.jit_compile if args.jit_compile is not None else 'auto'}, steps_per_execution "
          f"{args.steps_per_execution}, {args.repeats} repeats")
    default = RunConfig().checkpoint_interval
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        np.save(data / "x_train.npy", x)
        np.save(data / "x_test.npy", x[:64])
        np.save(data / "min_values.npy", np.float32(-80))
        np.save(data / "max_values.npy", np.float32(20))
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        variants = {"plain keras.Model.fit": lambda: baseline(x, args)}
        if args.tracked_port:
            variants["port with Mean trackers"] = lambda: baseline(x, args, tracked=True)
        variants |= {
                    f"vaekit, checkpoint every {default:g} s (default)": lambda: vaekit_fit(data, store, args, None)}
        if args.every_epoch:
            variants["vaekit, checkpoint every epoch"] = lambda: vaekit_fit(data, store, args, 0.0)
        names = list(variants)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for i in range(args.repeats):
            # Rotate the order, so a drift in machine load does not favour one variant.
            for name in names[i % len(names):] + names[:i % len(names)]:
                runs[name].append(variants[name]())
            print(f"  repeat {i + 1}: " + "   ".join(
                f"{name}: {whole(r, args):.0f} / {steady(r, args):.0f} ({r['ends'][0]:.1f} s + {r['tail']:.2f} s)"
                for name, r in ((n, runs[n][-1]) for n in names)))
        print("  (whole / steady samples/s (first epoch + after the last epoch's end))")

    n = args.clips * args.epochs
    med = statistics.median
    print(f"\n{'samples/s (median of repeats)':<44}{'whole':>8}{'steady':>8}{'per CPU-s':>11}   checkpoints a run")
    for name in names:
        rs = runs[name]
        print(f"{name:<44}{med(whole(r, args) for r in rs):8.1f}{med(steady(r, args) for r in rs):8.1f}"
              f"{med(n / r['cpu'] for r in rs):11.1f}   {rs[0]['writes']}")
    base = runs[names[0]]
    print(f"\n{'ratio vaekit / keras, paired by repeat':<44}{'whole: median (range)':>26}{'steady: median (range)':>28}")
    for name in names[1:]:
        w = [whole(r, args) / whole(b, args) for r, b in zip(runs[name], base)]
        s = [steady(r, args) / steady(b, args) for r, b in zip(runs[name], base)]
        print(f"{name:<44}{med(w):>10.3f} ({min(w):.3f}–{max(w):.3f}){med(s):>12.3f} ({min(s):.3f}–{max(s):.3f})")
    print("target: >= 1.0 on CPU (per CPU-s); >= 0.95 on a GPU")


def whole(r: dict, args) -> float:
    """Samples/s of the whole fit call."""
    return args.clips * args.epochs / r["wall"]


def steady(r: dict, args) -> float:
    """Samples/s from the end of epoch 1 to the end of the last epoch."""
    return args.clips * (len(r["ends"]) - 1) / (r["ends"][-1] - r["ends"][0])


if __name__ == "__main__":
    main()
