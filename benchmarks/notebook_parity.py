"""Does vaekit's default run learn as well as the notebook?  Test MSE/KL of both, same data.

Trains the plain Keras port of the notebook (benchmarks/notebook_port.py) and vaekit's
default components (conv2 + mse-kl, validation split 0 so both see all of x_train) on the
same notebook-format data, with the same epochs, batch size and seeds, and prints test
MSE and KL for each seed and their means.

    python benchmarks/notebook_parity.py [--data DIR] [--epochs 10] [--seeds 0,1,2]

Without --data it uses vaekit's default dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="notebook-format directory (default: vaekit's default dataset)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()

    import keras
    import numpy as np
    from notebook_port import evaluate_port, notebook_vae

    from vaekit.commands.run import run
    from vaekit.components import load_dataset, resolve
    from vaekit.config import RunConfig

    base = RunConfig(data=args.data, epochs=args.epochs, batch_size=args.batch_size, samples=0,
                     validation_split=0.0, experiment="parity")
    ds = load_dataset(base, resolve(base))
    x_train, x_test = ds.x_train[..., None], ds.x_test[..., None]
    print(f"data: {ds.source or 'default'}  train {len(x_train)}  test {len(x_test)}  shape {ds.shape}  "
          f"epochs {args.epochs}  batch {args.batch_size}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in map(int, args.seeds.split(",")):
            keras.utils.set_random_seed(seed)
            vae, _, _ = notebook_vae(*ds.shape)
            t = time.perf_counter()
            vae.fit(x_train, x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
            port_s = time.perf_counter() - t
            port = evaluate_port(vae, x_test, args.batch_size)
            cfg = RunConfig(**{**base.__dict__, "seed": seed, "tracking_uri": f"sqlite:///{tmp}/mlflow.db"})
            res = run(cfg, progress=False)
            ours = res.metrics
            rows.append((seed, port["test_mse"], port["test_kl"], ours["test_mse"], ours["test_kl"],
                         len(x_train) * args.epochs / port_s, ours["train_samples_per_s"]))
            print(f"seed {seed}: notebook port MSE {port['test_mse']:.5f} KL {port['test_kl']:.4f} | "
                  f"vaekit MSE {ours['test_mse']:.5f} KL {ours['test_kl']:.4f}")
    a = np.array([r[1:] for r in rows])
    m = a.mean(axis=0)
    print(f"mean: notebook port MSE {m[0]:.5f} KL {m[1]:.4f} ({m[4]:.0f} samples/s) | "
          f"vaekit MSE {m[2]:.5f} KL {m[3]:.4f} ({m[5]:.0f} samples/s) | MSE ratio vaekit/port {m[2] / m[0]:.3f}")


if __name__ == "__main__":
    main()
