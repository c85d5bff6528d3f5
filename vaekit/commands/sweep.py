"""``vaekit sweep``: every combination of a grid as child runs under one parent MLflow run.

``--grid KEY=V1,V2,...`` (repeatable) names a component option (``loss.lambda``) or a run
setting (``latent_dim``/``latent-dim``, ``learning_rate``, ...).  A sweep is a grid study (Optuna's
``GridSampler``, in memory) run by :class:`vaekit.launcher.StudyRunner`, the trial runner ``vaekit
tune`` runs on too: each combination is one ``vaekit run`` in its own process (``--jobs N`` at a time), with
the sweep's other settings, logged as a nested run: tag ``mlflow.parentRunId`` = the parent,
``vaekit.sweep.point`` = its index in the grid (combinations in order, the last key varying
fastest), ``vaekit.trial`` = its trial number.  The MLflow UI shows the children under the parent.

Contract:

- The grid, every combination's settings and component options are checked before anything
  starts; a mistake is one error line and no run.
- A child that fails is a FAILED run (with the ``vaekit.error`` tag) and does not stop the
  others — also when it fails before its own run could start (e.g. an option value only the
  component's build rejects): the sweep then records a FAILED child with the point's params.
- The parent ends FINISHED when at least one child finished, FAILED when all failed (KILLED on
  Ctrl-C/SIGTERM, which also stops the children).  ``vaekit sweep`` exits 0 only when every
  child finished, 1 otherwise.
- At the end it prints a table of the children's test metrics (also logged as ``sweep.txt``).
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vaekit.components import resolve
from vaekit.config import RunConfig, parse_value
from vaekit.errors import ConfigError, TrainingError
from vaekit.launcher import TABLE_METRICS, Launcher, StudyRunner, TrialRun, check_jobs, check_key, format_rows, grid_sampler, point_config


def parse_grid(items) -> list[tuple[str, list[Any]]]:
    """``["loss.lambda=100,500", "latent-dim=8,20"]`` → ``[("loss.lambda", [100, 500]), ("latent_dim", [8, 20])]``."""
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = check_key(key, f"--grid {item!r}")
        parsed = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not sep or not parsed:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. loss.lambda=100,500,1000")
        if key in dict(grid):
            raise ConfigError(f"--grid {item!r}: {key} is given twice")
        grid.append((key, parsed))
    if not grid:
        raise ConfigError("--grid: give at least one, e.g. --grid loss.lambda=100,500,1000")
    return grid


def grid_points(grid) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest."""
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    children: list[TrialRun]
    table: str

    @property
    def failed(self) -> list[TrialRun]:
        return [c for c in self.children if c.status != "FINISHED"]


def format_table(grid, children: list[TrialRun]) -> str:
    """A plain-text table: one row per child, grid values, status and test metrics."""
    metric_names = sorted({m for c in children for m in c.metrics if m.startswith(TABLE_METRICS)})
    header = ["#", *(k for k, _ in grid), "status", *metric_names, "run id"]
    rows = [[str(c.index), *(str(c.params[k]) for k, _ in grid), c.status,
             *(f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metric_names), c.run_id or "-"]
            for c in children]
    return format_rows(header, rows)


def sweep(base: RunConfig, grid_items, jobs: int = 1, plugin_files=(), echo=print, verbose: bool = False) -> SweepResult:
    """Run the grid; return the children and the table.  Raises :class:`TrainingError` if all failed
    (its ``table`` attribute holds the children's table)."""
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from vaekit import __version__, tracking

    check_jobs(jobs)
    grid = parse_grid(grid_items)
    points = grid_points(grid)
    uri = tracking.resolve_tracking_uri(base.tracking_uri)
    base = replace(base, tracking_uri=uri)
    for point in points:
        resolve(point_config(base, point))  # unknown components and option names fail here, before any run
    experiment_id = tracking.check_store(uri, base.experiment)
    client = MlflowClient(uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=grid_sampler(dict(grid), base.seed))
    distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in grid}
    # GridSampler orders its points its own way: the table and tags keep the grid's order.
    keys = [k for k, _ in grid]
    index = {tuple(p[k] for k in keys): i for i, p in enumerate(points)}
    tags = {"vaekit.version": __version__, "vaekit.sweep": "parent"}
    name = base.run_name or f"sweep {' x '.join(f'{k}({len(v)})' for k, v in grid)}"
    with tempfile.TemporaryDirectory(prefix="vaekit-sweep-") as tmp, \
            tracking.tracked_run(experiment_id, run_name=name, tags=tags) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params({f"sweep.grid.{k}": ",".join(map(str, v)) for k, v in grid})
        mlflow.log_params({"sweep.children": len(points), "sweep.jobs": jobs})
        mlflow.log_text(base.to_toml(), "config.toml")
        launcher = Launcher(Path(tmp), plugin_files, echo, prefix="child", verbose=verbose)
        runner = StudyRunner(study, base=base, distributions=distributions, parent_id=parent_id,
                             experiment_id=experiment_id, client=client, launcher=launcher, n_trials=len(points),
                             jobs=jobs, metric="test_loss", echo=echo,
                             index=lambda params, number: index[tuple(params[k] for k in keys)],
                             tags=lambda rec: {"vaekit.sweep.parent": parent_id, "vaekit.sweep.point": str(rec.index)})
        echo(f"sweep {parent_id}: {len(points)} runs, {jobs} at a time")
        try:
            children = runner.run()
        finally:
            mlflow.log_artifacts(tmp, "children")
        table = format_table(grid, children)
        mlflow.log_text(table + "\n", "sweep.txt")
        n_ok = sum(c.status == "FINISHED" for c in children)
        mlflow.log_metrics({"sweep.finished": n_ok, "sweep.failed": len(children) - n_ok})
        result = SweepResult(parent_id, experiment_id, uri, children, table)
        if n_ok == 0:
            error = TrainingError(f"all {len(children)} runs of sweep {parent_id} failed; first error: {children[0].error}")
            error.table = table  # the CLI prints it (with --quiet too): it says what each child did
            raise error
    return result
