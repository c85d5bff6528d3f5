"""Does a conditional run say the digit it is asked for, and does conditioning cost reconstruction?

The target of issue #25, on spoken digits synthesised by espeak-ng (``benchmarks/make_speech.py``),
prepared split by speaker with the label ``digit``: a run conditioned on ``digit`` at the notebook's
settings (conv2, λ = 500, d = 20, Adam, 10 epochs, batch 64) must draw samples that a classifier trained
on the run's training clips assigns to the digit asked for at least 80 % of the time
(``sample_label_accuracy`` ≥ 0.8), with that classifier's own test accuracy ≥ 0.9, and reconstruct the
test clips no worse than the same run without the condition (``test_recon_mel_db``).

Trains both runs on the same data with the same seeds, the arms alternating seed by seed in this one
process, and prints them side by side with the CPU seconds each took (training and evaluation).

    python benchmarks/conditioning.py                     # makes /tmp/vaekit-digits and its data first; seeds 0,1,2
    python benchmarks/conditioning.py --data DIR --seeds 0 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
KEYS = ("test_mse", "test_recon_mel_db", "test_recon_mcd_db", "sample_fd", "sample_diversity", "sample_label_accuracy",
        "sample_label_classifier_accuracy")


def digits_data(root: Path) -> Path:
    """espeak-ng digits under ``root``, prepared split by speaker with the label digit (made once)."""
    audio, data = root / "digits", root / "digits-data"
    if not (data / "y_train.npy").is_file():
        if not audio.is_dir():
            subprocess.run([sys.executable, str(HERE / "make_speech.py"), str(audio)], check=True)
        from vaekit.prepare import prepare_folder

        prepare_folder(audio, data, split_by="speaker", labels=["digit=field:0"], force=True, progress=False)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="prepared data with the label digit [espeak-ng digits in --work]")
    ap.add_argument("--work", default="/tmp/vaekit-digits", help="where the espeak-ng digits are made")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--encoder", default="conv2")
    args = ap.parse_args()

    import numpy as np

    from vaekit.commands.run import run
    from vaekit.config import RunConfig

    data = Path(args.data) if args.data else digits_data(Path(args.work))
    rows = {"unconditional": [], "conditional": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in map(int, args.seeds.split(",")):
            for arm in rows:
                cfg = RunConfig(data=str(data), epochs=args.epochs, seed=seed, samples=4, encoder=args.encoder,
                                decoder=args.encoder, condition="digit" if arm == "conditional" else None,
                                tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="conditioning")
                cpu = time.process_time()
                result = run(cfg, progress=False)
                m = dict(result.metrics, cpu_s=time.process_time() - cpu)
                rows[arm].append(m)
                print(f"seed {seed} {arm:>13}: " + ", ".join(f"{k} {m[k]:.4g}" for k in (*KEYS, "cpu_s") if k in m),
                      flush=True)
    load = os.getloadavg()
    print(f"\n{data}  epochs {args.epochs}  seeds {args.seeds}  encoder {args.encoder}  "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'metric (mean over seeds)':<34}{'unconditional':>15}{'conditional':>15}{'ratio':>9}")
    for key in (*KEYS, "cpu_s"):
        u = [m[key] for m in rows["unconditional"] if key in m]
        c = [m[key] for m in rows["conditional"] if key in m]
        mu, mc = (float(np.mean(v)) if v else None for v in (u, c))
        shown = [f"{v:>15.4f}" if v is not None else f"{'—':>15}" for v in (mu, mc)]
        ratio = f"{mc / mu:>9.3f}" if mu and mc is not None else f"{'':>9}"
        print(f"{key:<34}{shown[0]}{shown[1]}{ratio}")
    c = rows["conditional"]
    acc = float(np.mean([m["sample_label_accuracy"] for m in c]))
    clf = float(np.mean([m["sample_label_classifier_accuracy"] for m in c]))
    recon = [m["test_recon_mel_db"] for m in c], [m["test_recon_mel_db"] for m in rows["unconditional"]]
    print(f"\ntarget: sample_label_accuracy {acc:.3f} ≥ 0.8: {'met' if acc >= 0.8 else 'MISSED'}; "
          f"classifier test accuracy {clf:.3f} ≥ 0.9: {'met' if clf >= 0.9 else 'MISSED'}; "
          f"test_recon_mel_db {np.mean(recon[0]):.3f} ≤ {np.mean(recon[1]):.3f}: "
          f"{'met' if np.mean(recon[0]) <= np.mean(recon[1]) else 'MISSED'}")


if __name__ == "__main__":
    main()
