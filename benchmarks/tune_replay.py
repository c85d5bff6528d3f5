"""Replay ``vaekit tune``'s sampler and pruners on the learning curves of a finished grid, over many seeds.

One real run of ``benchmarks/tune.py`` is one draw of a random process (TPE's start-up trials are
random), and at full size it takes half an hour an arm.  This script reads the grid arm that
``benchmarks/tune.py --workdir DIR`` left in ``DIR/mlflow.db`` (per-epoch ``val_mse`` and final
``test_mse`` of all 16 runs) and replays a 16-trial study in memory, many times: TPE as ``vaekit
tune`` makes it, and each pruner as ``vaekit tune`` makes it, reporting each trial's ``val_mse``
epoch by epoch and stopping it when the pruner says so (never after the last epoch, as in a run).

A trial at (λ, d) gets the grid's curve and ``test_mse`` at its latent size, interpolated linearly in
log λ between the grid's two nearest λ: a model of the real trials, not a measurement.  Cost is epochs
trained (conv2's epoch time barely depends on λ or d).  Per pruner it prints the median and 90th
percentile over seeds of best ``test_mse`` / grid best − 1 and of epochs / grid epochs, and how often
each target (≤ +5 %, ≤ 0.50) and both were met.

    python benchmarks/tune.py --workdir DIR            # once: the grid arm (and one real tune arm)
    python benchmarks/tune_replay.py DIR               # then: every pruner, 100 seeds, in about a minute
    python benchmarks/tune_replay.py DIR --pruners median:1,halving --seeds 30
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_PRUNERS = "none,median:5,median:4,median:2,median:1,halving,hyperband"


def load_grid(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("grid")
    if exp is None:
        sys.exit(f"{root / 'mlflow.db'}: no experiment 'grid' (run benchmarks/tune.py --workdir {root} first)")
    curves, final = {}, {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if not run.data.tags.get("mlflow.parentRunId") or run.info.status != "FINISHED":
            continue
        key = (float(run.data.params["loss.lambda"]), int(run.data.params["latent_dim"]))
        history = sorted(client.get_metric_history(run.info.run_id, "val_mse"), key=lambda m: m.step)
        curves[key] = np.array([m.value for m in history])
        final[key] = run.data.metrics["test_mse"]
    return curves, final


def replay(curves, final, pruner_spec: str, seeds: int, n_trials: int):
    import optuna

    from vaekit import studies
    from vaekit.commands.tune import tpe_startup

    lambdas = sorted({k[0] for k in curves})
    sizes = sorted({k[1] for k in curves})
    epochs = len(next(iter(curves.values())))
    best = min(final.values())
    log_l = np.log(lambdas)

    def at(lam, d):
        i = int(min(max(np.searchsorted(log_l, math.log(lam)) - 1, 0), len(lambdas) - 2))
        w = (math.log(lam) - log_l[i]) / (log_l[i + 1] - log_l[i])
        a, b = (lambdas[i], d), (lambdas[i + 1], d)
        return (1 - w) * curves[a] + w * curves[b], (1 - w) * final[a] + w * final[b]

    name, _, startup = pruner_spec.partition(":")
    space = {"loss.lambda": optuna.distributions.FloatDistribution(lambdas[0], lambdas[-1], log=True),
             "latent_dim": optuna.distributions.CategoricalDistribution(sizes)}
    quality, cost = [], []
    for seed in range(seeds):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=tpe_startup(n_trials), seed=seed),
                                    pruner=studies.make_pruner(name, int(startup or studies.PRUNER_STARTUP)))
        trained, complete = 0, []
        for _ in range(n_trials):
            trial = study.ask(space)
            curve, test_mse = at(trial.params["loss.lambda"], trial.params["latent_dim"])
            for epoch in range(epochs):
                trained += 1
                trial.report(float(curve[epoch]), epoch)
                if epoch + 1 < epochs and trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                study.tell(trial, test_mse)
                complete.append(test_mse)
        quality.append(min(complete) / best - 1 if complete else math.inf)
        cost.append(trained / (len(curves) * epochs))
    return np.array(quality), np.array(cost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="benchmarks/tune.py's --workdir, holding a finished grid arm")
    ap.add_argument("--pruners", default=DEFAULT_PRUNERS, help=f"NAME[:STARTUP],... [{DEFAULT_PRUNERS}]")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--trials", type=int, default=16)
    args = ap.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    curves, final = load_grid(args.workdir)
    if len(curves) < 4:
        sys.exit(f"{args.workdir}: the grid arm has {len(curves)} finished runs")
    best_at = min(final, key=final.get)
    print(f"grid: {len(curves)} runs, best test_mse {final[best_at]:.5f} at λ {best_at[0]:g}, d {best_at[1]}; "
          f"{args.seeds} replays of a {args.trials}-trial TPE study per pruner")
    print("| pruner | best test_mse vs grid: median | p90 | ≤ +5 % | epochs vs grid: median | p90 | ≤ 0.50 | both |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.pruners.split(","):
        q, c = replay(curves, final, spec, args.seeds, args.trials)
        print(f"| {spec} | {np.median(q):+.1%} | {np.quantile(q, 0.9):+.1%} | {np.mean(q <= 0.05):.0%} | "
              f"{np.median(c):.2f} | {np.quantile(c, 0.9):.2f} | {np.mean(c <= 0.5):.0%} | "
              f"{np.mean((q <= 0.05) & (c <= 0.5)):.0%} |", flush=True)


if __name__ == "__main__":
    main()
