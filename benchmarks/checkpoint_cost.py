"""Cost of the per-epoch checkpoint for the notebook's conv2 VAE (d = 20), against one training epoch.

    python benchmarks/checkpoint_cost.py [N_CLIPS]

Prints the checkpoint size, the seconds one save takes (state.npz + state.json logged to a fresh
local sqlite store) and the ratio to one epoch over N_CLIPS (default 1024) 50×50 spectrograms,
both measured here in the same process.  Checkpoint cost is independent of the data size; the
epoch grows with it, so the ratio only falls on real datasets.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(n_clips: int = 1024) -> None:
    import keras
    import mlflow
    import numpy as np

    from vaekit import checkpoint
    from vaekit.components import get_component
    from vaekit.model import VAE

    x = np.random.default_rng(0).random((n_clips, 50, 50, 1), dtype=np.float32)
    enc = get_component("encoder", "conv2").create((50, 50, 1), 20)
    dec = get_component("decoder", "conv2").create(20, (50, 50, 1))
    model = VAE(enc, dec, seed=0)
    model.set_loss(get_component("loss", "mse-kl").create(), x[:2])
    model.compile(optimizer=keras.optimizers.Adam())
    model.fit(x[:64], batch_size=64, epochs=1, verbose=0)  # trace once, outside the timing
    t = time.perf_counter()
    model.fit(x, batch_size=64, epochs=1, verbose=0)
    epoch_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        with mlflow.start_run() as run:
            times = []
            for i in range(3):
                t = time.perf_counter()
                # A snapshot, then the write the background writer does (checkpoint.save no longer exists).
                checkpoint.write(checkpoint.snapshot(model, {}), i + 1, {"loss": 0.0}, run.info.run_id,
                                 mlflow.get_tracking_uri())
                times.append(time.perf_counter() - t)
            state = Path(urlparse(run.info.artifact_uri).path) / "checkpoints" / "slot0" / "state.npz"
            size_mb = state.stat().st_size / 1e6
    save_s = min(times)
    print(f"conv2 VAE, d=20: checkpoint {size_mb:.1f} MB, save {save_s:.2f} s (min of 3; max {max(times):.2f} s)")
    print(f"one epoch over {n_clips} clips, batch 64: {epoch_s:.2f} s")
    print(f"checkpoint / epoch: {save_s / epoch_s:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
