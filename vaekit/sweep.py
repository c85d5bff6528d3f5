"""``vaekit sweep``: every combination of a grid as child runs under one parent MLflow run.

``--grid KEY=V1,V2,...`` (repeatable) names a component option (``loss.lambda``) or a run
setting (``latent_dim``/``latent-dim``, ``learning_rate``, ...).  Each combination is one
``vaekit run`` in its own process (``--jobs N`` at a time), with the sweep's other settings,
logged as a nested run: tag ``mlflow.parentRunId`` = the parent, ``vaekit.sweep.point`` = its
index.  The MLflow UI shows the children under the parent.

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
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaekit.components import KINDS, resolve
from vaekit.config import RunConfig, merge, parse_value
from vaekit.errors import ConfigError, TrainingError
from vaekit.runlog import ENV_TAGS

#: Settings a grid may not vary: they say where runs go, not what they are.
_NOT_SWEPT = {"options", "tracking_uri", "experiment", "run_name"}


def parse_grid(items) -> list[tuple[str, list[Any]]]:
    """``["loss.lambda=100,500", "latent-dim=8,20"]`` → ``[("loss.lambda", [100, 500]), ("latent_dim", [8, 20])]``."""
    settings = {f.name for f in fields(RunConfig)} - _NOT_SWEPT
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        kind, dot, name = key.partition(".")
        if dot:
            if kind not in KINDS:
                raise ConfigError(f"--grid {item!r}: unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
            if not name:
                raise ConfigError(f"--grid {item!r}: no option name after {kind}., e.g. {kind}.NAME=V1,V2")
        else:
            key = key.replace("-", "_")
            if key not in settings:
                raise ConfigError(f"--grid {item!r}: {key!r} is neither KIND.OPTION nor a run setting "
                                  f"({', '.join(sorted(settings))})")
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


def point_config(base: RunConfig, point: dict[str, Any]) -> RunConfig:
    """``base`` with one grid point applied (options and settings), checked."""
    options: dict[str, dict[str, Any]] = {}
    settings = {}
    for key, value in point.items():
        kind, dot, name = key.partition(".")
        if dot:
            options.setdefault(kind, {})[name] = value
        else:
            settings[key] = value
    try:
        return merge(base, options=options, **settings).validate()
    except ConfigError as exc:
        raise ConfigError(f"--grid {', '.join(f'{k}={v}' for k, v in point.items())}: {exc}") from None


def point_label(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


@dataclass
class Child:
    """One grid point and what became of it."""

    index: int
    point: dict[str, Any]
    config: RunConfig
    returncode: int | None = None
    run_id: str | None = None
    status: str = "PENDING"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    children: list[Child]
    table: str

    @property
    def failed(self) -> list[Child]:
        return [c for c in self.children if c.status != "FINISHED"]


class _Launcher:
    """Runs children as ``python -m vaekit run`` processes; stops them all on request."""

    def __init__(self, workdir: Path, plugin_files, echo, verbose: bool = False):
        self.workdir, self.plugin_files, self.echo, self.verbose = workdir, list(plugin_files), echo, verbose
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def __call__(self, child: Child, parent_id: str) -> Child:
        cfg_path = self.workdir / f"child_{child.index:03d}.toml"
        cfg_path.write_text(child.config.to_toml())
        log_path = self.workdir / f"child_{child.index:03d}.log"
        cmd = [sys.executable, "-m", "vaekit", "run", "--config", str(cfg_path), "--quiet"] + ["--verbose"] * self.verbose
        for plugin in self.plugin_files:
            cmd += ["--plugin", str(plugin)]
        tags = {"mlflow.parentRunId": parent_id, "vaekit.sweep.parent": parent_id,
                "vaekit.sweep.point": str(child.index)}
        env = {**os.environ, ENV_TAGS: json.dumps(tags)}  # the child's own vaekit.console quiets it (unless --verbose)
        with self.lock:
            if self.stopping:
                child.status, child.error = "KILLED", "sweep stopped before this child started"
                return child
            self.echo(f"[{child.index}] start  {point_label(child.point)}")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.procs.add(proc)
        child.returncode = proc.wait()
        with self.lock:
            self.procs.discard(proc)
        text = log_path.read_text(errors="replace")
        errors = [line[len("Error: "):] for line in text.splitlines() if line.startswith("Error: ")]
        child.error = errors[-1] if errors else (text.strip().splitlines() or [""])[-1] if child.returncode else ""
        self.echo(f"[{child.index}] {'done ' if child.returncode == 0 else 'FAILED'} {point_label(child.point)}"
                  + (f": {child.error}" if child.returncode else ""))
        return child

    def stop(self) -> None:
        """SIGTERM every running child (each then ends its own run KILLED) and wait for them.

        A second Ctrl-C or SIGTERM while waiting kills the children that are left (SIGKILL) and
        is re-raised: no child outlives the sweep.  Their runs, left RUNNING, are ended by
        :func:`_collect`.
        """
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for proc in procs:
            proc.terminate()
        try:
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        except BaseException:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for proc in procs:
                proc.wait()
            raise


def _collect(client, experiment_id: str, parent_id: str, children: list[Child], stopped: bool = False) -> None:
    """Find each child's run; record a FAILED run for a child that failed before its run started.

    A child run still RUNNING has lost its process: KILLED when the sweep was ``stopped`` (the
    user's Ctrl-C or SIGTERM), else FAILED.
    """
    found = {r.data.tags.get("vaekit.sweep.point"): r for r in client.search_runs(
        [experiment_id], filter_string=f"tags.`vaekit.sweep.parent` = '{parent_id}'", max_results=10000)}
    for child in children:
        run = found.get(str(child.index))
        if run is None:
            if child.status == "KILLED":
                continue
            run = client.create_run(experiment_id, run_name=point_label(child.point), tags={
                "mlflow.parentRunId": parent_id, "vaekit.sweep.parent": parent_id,
                "vaekit.sweep.point": str(child.index), "vaekit.error": child.error or "failed before its run started"})
            for key, value in child.point.items():
                client.log_param(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, "FAILED")
            run = client.get_run(run.info.run_id)
        elif run.info.status == "RUNNING":  # the process died without ending its run (e.g. SIGKILL)
            client.set_terminated(run.info.run_id, "KILLED" if stopped else "FAILED")
            run = client.get_run(run.info.run_id)
        child.run_id = run.info.run_id
        child.status = run.info.status
        child.metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(TABLE_METRICS)}
        child.error = child.error or run.data.tags.get("vaekit.error", "")


#: The children's metrics the table shows: test-set figures (loss terms and audio metrics) and sample metrics.
TABLE_METRICS = ("test_", "sample_")


def format_table(grid, children: list[Child]) -> str:
    """A plain-text table: one row per child, grid values, status and test metrics."""
    metric_names = sorted({m for c in children for m in c.metrics})
    header = ["#", *(k for k, _ in grid), "status", *metric_names, "run id"]
    rows = [[str(c.index), *(str(c.point[k]) for k, _ in grid), c.status,
             *(f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metric_names), c.run_id or "-"]
            for c in children]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def sweep(base: RunConfig, grid_items, jobs: int = 1, plugin_files=(), echo=print, verbose: bool = False) -> SweepResult:
    """Run the grid; return the children and the table.  Raises :class:`TrainingError` if all failed
    (its ``table`` attribute holds the children's table)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from vaekit import __version__, tracking

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    grid = parse_grid(grid_items)
    points = grid_points(grid)
    uri = tracking.resolve_tracking_uri(base.tracking_uri)
    children = []
    for i, point in enumerate(points):
        cfg = point_config(replace(base, tracking_uri=uri, run_name=point_label(point)), point)
        resolve(cfg)  # unknown components and option names fail here, before any run
        children.append(Child(i, point, cfg))
    experiment_id = tracking.check_store(uri, base.experiment)
    client = MlflowClient(uri)
    tags = {"vaekit.version": __version__, "vaekit.sweep": "parent"}
    name = base.run_name or f"sweep {' x '.join(f'{k}({len(v)})' for k, v in grid)}"
    with tempfile.TemporaryDirectory(prefix="vaekit-sweep-") as tmp, \
            tracking.tracked_run(experiment_id, run_name=name, tags=tags) as parent:
        parent_id = parent.info.run_id
        mlflow.log_params({f"sweep.grid.{k}": ",".join(map(str, v)) for k, v in grid})
        mlflow.log_params({"sweep.children": len(children), "sweep.jobs": jobs})
        mlflow.log_text(base.to_toml(), "config.toml")
        launcher = _Launcher(Path(tmp), plugin_files, echo, verbose)
        echo(f"sweep {parent_id}: {len(children)} runs, {jobs} at a time")
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = [pool.submit(launcher, c, parent_id) for c in children]
            for future in futures:
                future.result()
        except BaseException:
            launcher.stop()
            raise
        finally:
            pool.shutdown(wait=True)
            _collect(client, experiment_id, parent_id, children, stopped=launcher.stopping)
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
