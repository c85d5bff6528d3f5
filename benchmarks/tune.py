"""``vaekit tune`` (TPE with median pruning) against the full grid (``vaekit sweep``) over the same ranges.

Both search λ (``loss.lambda``) and the latent size on the default dataset (synthetic voices) with
the default model, one trial at a time, into one throw-away MLflow store:

- grid: ``vaekit sweep`` over 4 λ values (log-spaced over the range) × 4 latent sizes = 16 runs, each to the end;
- tune: ``vaekit tune`` with ``--trials 16`` (default 16), TPE over λ as a log range and the same 4 latent
  sizes, pruning with the median pruner on ``val_mse`` (``--pruner``, ``--pruner-startup``: default median, 1).

Per arm it prints the best ``test_mse`` and the total training time (the sum of the runs'
``train_seconds``: what pruning saves; process start-up and logging are not in it), and then the
ratios tune / grid.  Target: best ``test_mse`` within 5 % of the grid's in at most half its training time.

One arm at full size (4000 clips, 10 epochs) takes ~27 min (grid) and ~15-20 min (tune) on one
core.  ``--workdir`` keeps the store: a grid arm found there is reused (CPU training is
deterministic), ``--arm tune`` runs only the tune arm (so the two can run side by side, each
``taskset`` to its own core), and ``benchmarks/tune_replay.py DIR`` replays every pruner on the grid's
curves over many seeds (one real tune arm is one draw of a random process):

    python benchmarks/tune.py --workdir DIR                             # both arms, one after the other
    python benchmarks/tune.py --workdir DIR --arm tune --pruner-startup 4   # another tune arm, same grid
    python benchmarks/tune.py --clips 512 --epochs 5                    # ~8x less data
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAMBDA = (100.0, 5000.0)
LATENT = [8, 16, 20, 32]


def vaekit(*args, env) -> None:
    cmd = [sys.executable, "-m", "vaekit", *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[2:5])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def arm(client, experiment: str) -> dict:
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("mlflow.parentRunId")]
    done = [r for r in runs if r.info.status == "FINISHED"]
    complete = [r for r in done if r.data.tags.get("vaekit.pruned") != "true"]
    best = min(complete, key=lambda r: r.data.metrics["test_mse"])
    return {"runs": len(runs), "pruned": len(done) - len(complete), "failed": len(runs) - len(done),
            "best": best.data.metrics["test_mse"], "best_params": {k: best.data.params[k] for k in ("loss.lambda", "latent_dim")},
            "train_s": sum(r.data.metrics.get("train_seconds", 0.0) for r in runs),
            "epochs": sum(len(client.get_metric_history(r.info.run_id, "loss")) for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4000, help="Clips of the synthetic dataset [4000, its default].")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=16, help="Trials of the TPE study [16, the grid's size].")
    ap.add_argument("--pruner", default="median", help="vaekit tune's --pruner [median].")
    ap.add_argument("--pruner-startup", type=int, default=1,
                    help="vaekit tune's --pruner-startup [1: the setting that met both targets; see docs/tune.md]")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--encoder", default="conv2", help="Encoder and decoder [conv2, the default model].")
    ap.add_argument("--arm", choices=("both", "grid", "tune"), default="both",
                    help="Run only one arm (two processes on one --workdir can run the arms side by side) [both].")
    ap.add_argument("--workdir", help="Keep the store here [a temporary folder]; a grid arm already in it is reused "
                                      "(CPU training is deterministic), so several pruners can be compared to one grid.")
    args = ap.parse_args()

    from mlflow.tracking import MlflowClient

    root = Path(args.workdir or tempfile.mkdtemp(prefix="vaekit-bench-tune-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    store = f"sqlite:///{root / 'mlflow.db'}"
    lambdas = [round(math.exp(math.log(LAMBDA[0]) + i * (math.log(LAMBDA[1]) - math.log(LAMBDA[0])) / 3)) for i in range(4)]
    common = ["--tracking-uri", store, "--epochs", args.epochs, "--batch-size", args.batch_size, "--samples", 0,
              "--encoder", args.encoder, "--decoder", args.encoder, "--option", f"dataset.clips={args.clips}",
              "--checkpoint-interval", 3600, "--quiet"]
    (root / "space.toml").write_text(f'"loss.lambda" = {{low = {LAMBDA[0]}, high = {LAMBDA[1]}, log = true}}\n'
                                     f"latent_dim = {LATENT}\n")
    print(f"{args.clips} clips, {args.epochs} epochs, batch {args.batch_size}, {args.encoder}; store {root}", flush=True)
    client = MlflowClient(store)
    tune_exp = f"tune-{args.pruner}-{args.pruner_startup}"
    if (root / "mlflow.db").exists() and client.get_experiment_by_name(tune_exp):
        sys.exit(f"{root} already holds experiment {tune_exp}: use another --workdir or --pruner")
    grid_done = (root / "mlflow.db").exists() and client.get_experiment_by_name("grid") and arm(client, "grid")["runs"] == 16
    t0 = time.perf_counter()
    if args.arm != "tune" and grid_done:
        print("grid arm: reusing the one in the store", flush=True)
    elif args.arm != "tune":
        vaekit("sweep", "--grid", "loss.lambda=" + ",".join(map(str, lambdas)), "--grid", "latent_dim=" + ",".join(map(str, LATENT)),
               "--experiment", "grid", *common, env=env)
    grid_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.arm == "grid":
        print(f"grid: {arm(client, 'grid')}")
        return
    vaekit("tune", "--space", root / "space.toml", "--trials", args.trials, "--storage", root / "optuna.journal",
           "--sampler", "tpe", "--pruner", args.pruner, "--pruner-startup", args.pruner_startup, "--study", tune_exp,
           "--experiment", tune_exp,
           *common, env=env)
    tune_wall = time.perf_counter() - t0

    tpe = arm(client, tune_exp)
    if args.arm == "tune":
        print(f"{tune_exp}: {tpe}, wall {time.perf_counter() - t0:.1f} s")
        while not (client.get_experiment_by_name("grid") and arm(client, "grid")["runs"] == 16
                   and all(r.info.status != "RUNNING" for r in client.search_runs(
                       [client.get_experiment_by_name("grid").experiment_id]))):
            time.sleep(30)  # the grid arm runs in another process
        grid_wall = float("nan")
    grid = arm(client, "grid")
    for name, a, wall in (("grid (sweep)", grid, grid_wall), (f"TPE + {args.pruner} pruning (tune)", tpe, tune_wall)):
        print(f"{name:28} runs {a['runs']:2d} (pruned {a['pruned']}, failed {a['failed']}), epochs trained {a['epochs']:3d}, "
              f"best test_mse {a['best']:.5f} at {a['best_params']}, training {a['train_s']:7.1f} s, wall {wall:7.1f} s")
    quality = tpe["best"] / grid["best"] - 1
    cost = tpe["train_s"] / grid["train_s"]
    print(f"tune / grid: best test_mse {quality:+.1%} (target ≤ +5 %), training time {cost:.2f} (target ≤ 0.50), "
          f"epochs {tpe['epochs'] / grid['epochs']:.2f}")


if __name__ == "__main__":
    main()
