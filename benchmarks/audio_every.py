"""Cost of ``--audio-every N`` against the same run without it: CPU-seconds of whole ``vaekit run`` calls.

    python benchmarks/audio_every.py [--every 0,10,1] [--repeats 2] [--epochs 10] [--clips 4000]

Runs the default run (the notebook's conv2, mse-kl, griffinlim at 32 iterations, 10 epochs, on the default
synthetic voices) once per arm and repeat, arms alternating in one process (each arm sees the same
machine load on average), and prints each arm's median CPU-seconds (this process: training, evaluation,
vocoding, logging; the dataset is made before the timing) and wall seconds, its ratio to the first arm
(``--every 0``: no listening; an untimed one-epoch run first pays the process's one-off costs), and the
CPU-seconds one listening costs: from the difference of the medians,
and as timed inside the runs (the listening functions wrapped: a direct figure, free of run-to-run noise).
Also prints every arm's test MSE (listening must not change training).  Say how loaded the machine was:
the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", default="0,10,1", help="--audio-every values; the first is the baseline")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--clips", type=int, default=4000, help="synthetic clips (the default dataset: 4000)")
    args = ap.parse_args()
    arms = [int(v) for v in args.every.split(",")]

    from vaekit import runlog
    from vaekit.commands.run import run
    from vaekit.components import load_dataset, resolve
    from vaekit.config import RunConfig

    inside = {"cpu": 0.0, "times": 0}

    def timed(fn, counts):
        def wrapper(*a, **kw):
            c = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                inside["cpu"] += time.process_time() - c
                inside["times"] += counts
        return wrapper

    runlog.log_epoch_audio = timed(runlog.log_epoch_audio, 1)  # the callback looks both up in runlog at call time
    runlog._original_waves = timed(runlog._original_waves, 0)

    dataset = {"dataset": {"clips": args.clips, "progress": False}}
    base = RunConfig(epochs=args.epochs, options=dataset)
    ds = load_dataset(base, resolve(base))  # made (and cached) before any timing
    print(f"data: {len(ds.x_train)} train, {len(ds.x_test)} test, {ds.shape[0]}×{ds.shape[1]}; {args.epochs} epochs; "
          f"load {os.getloadavg()[0]:.1f} at start")
    cpu, wall, mse = {a: [] for a in arms}, {a: [] for a in arms}, {a: set() for a in arms}
    listening = {a: [] for a in arms}  # CPU-s inside the listening functions, per run
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        # Untimed: the first run in a process pays one-off costs (imports, graph tracing, the store's tables).
        run(RunConfig(epochs=1, options=dataset, audio_every=1, tracking_uri=store), progress=False)
        for repeat in range(args.repeats):
            for every in (arms if repeat % 2 == 0 else arms[::-1]):  # alternate the order: drift hits both ends
                config = RunConfig(epochs=args.epochs, options=dataset, audio_every=every, tracking_uri=store)
                inside.update(cpu=0.0, times=0)
                c, w = time.process_time(), time.perf_counter()
                result = run(config, progress=False)
                cpu[every].append(time.process_time() - c)
                wall[every].append(time.perf_counter() - w)
                mse[every].add(result.metrics["test_mse"])
                listening[every].append(inside["cpu"])
                print(f"  repeat {repeat}, --audio-every {every}: {cpu[every][-1]:.1f} CPU-s, {wall[every][-1]:.1f} s wall, "
                      f"{inside['times']} listenings: {inside['cpu']:.1f} CPU-s of it")
    ref = statistics.median(cpu[arms[0]])
    print(f"{'--audio-every':>14} {'CPU-s':>8} {'wall s':>8} {'CPU ratio':>10} {'a listening (diff)':>19} "
          f"{'listening inside':>17} {'its share':>10}  test MSE")
    for every in arms:
        med = statistics.median(cpu[every])
        times = args.epochs // every if every else 0
        each = f"{(med - ref) / times:.2f}" if times else "-"
        share = statistics.median(listening[every]) / ref
        print(f"{every:>14} {med:>8.1f} {statistics.median(wall[every]):>8.1f} {med / ref:>10.3f} {each:>19} "
              f"{statistics.median(listening[every]):>17.2f} {share:>10.3f}  "
              f"{', '.join(repr(m) for m in sorted(mse[every]))}")
    print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
