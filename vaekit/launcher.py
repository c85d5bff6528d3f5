"""The trial runner of ``vaekit tune`` and ``vaekit sweep``: trials as ``vaekit run`` processes under one parent run.

:class:`StudyRunner` asks an Optuna study for a trial, starts ``python -m vaekit run`` with the
trial's settings (``--jobs`` of them at a time, each in its own process, :class:`Launcher`), finds
the trial's MLflow run when the process ends and tells the study how it went.  A trial's settings
are a *point*: run settings and ``KIND.OPTION`` values (:func:`check_key`, :func:`point_config`).

Both commands build on it; neither imports the other.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaekit import kinds, studies
from vaekit.config import RunConfig, merge
from vaekit.errors import ConfigError, VaekitError
from vaekit.runlog import ENV_TAGS

#: Settings a study may not vary: they say where runs go, not what they are.
NOT_VARIED = {"options", "tracking_uri", "experiment", "run_name"}
#: Trial user attributes: stopped by an interruption (queued again, not counted), beyond --trials.
INTERRUPTED, SURPLUS = "vaekit.interrupted", "vaekit.surplus"
#: Trial user attribute: the process running it (host, pid, start time).
OWNER_ATTR = "vaekit.owner"
#: Trials (a sweep's runs) at a time, at most: each is a training process, and each has a thread waiting on it.
MAX_JOBS = 256


def check_jobs(jobs: int) -> None:
    """:class:`ConfigError` unless 1 ≤ ``jobs`` ≤ :data:`MAX_JOBS` (``tune`` and ``sweep``)."""
    if not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"--jobs {jobs}: must be from 1 to {MAX_JOBS} (each job is a training process of its own)")


def check_key(key: str, where: str) -> str:
    """``key`` as a setting (``latent-dim`` → ``latent_dim``) or ``KIND.OPTION``; else :class:`ConfigError`."""
    settings = {f.name for f in fields(RunConfig)} - NOT_VARIED
    kind, dot, name = key.strip().partition(".")
    if dot:
        if kind not in kinds.names():
            raise ConfigError(f"{where}: {kinds.unknown(kind)}")
        if not name:
            raise ConfigError(f"{where}: no option name after {kind}., e.g. {kind}.NAME")
        return key.strip()
    key = key.strip().replace("-", "_")
    if key not in settings:
        raise ConfigError(f"{where}: {key!r} is neither KIND.OPTION nor a run setting ({', '.join(sorted(settings))})")
    return key


def point_config(base: RunConfig, point: dict[str, Any], where: str | None = "--grid") -> RunConfig:
    """``base`` with one point applied (options and settings), checked; an error names ``where`` and the point
    (``where=None``: the caller names them)."""
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
        if where is None:
            raise
        raise ConfigError(f"{where} {', '.join(f'{k}={v}' for k, v in point.items())}: {exc}") from None


def point_label(point: dict[str, Any]) -> str:
    """A point as a run name and a table label: ``loss.lambda=500,latent_dim=8``."""
    return ",".join(f"{k}={short(v)}" for k, v in point.items())


def short(value) -> str:
    """A value as the tables show it: a float to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- running trials ----------------------------------------------------------------------------------------


@dataclass
class TrialRun:
    """One trial (a sweep's grid point) and what became of it."""

    number: int
    params: dict[str, Any]
    index: int
    config: RunConfig | None = None
    returncode: int | None = None
    run_id: str | None = None
    status: str = "PENDING"  # the MLflow run's
    state: str = ""  # the Optuna trial's: COMPLETE, PRUNED, FAIL
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float | None = None
    pruned_epoch: int | None = None
    error: str = ""
    #: Stopped by a signal (the command's, or its own process's), not failed: its settings are queued again.
    interrupted: bool = False


#: Exit codes of a trial process stopped by SIGINT or SIGTERM (vaekit's own, and the signal's where it had no handler yet).
STOP_CODES = (130, 143, -2, -15)
#: The trials' metrics the tables show: test-set figures (loss terms and audio metrics) and sample metrics.
TABLE_METRICS = ("test_", "sample_")


class Launcher:
    """Runs trials as ``python -m vaekit run`` processes (logs in ``workdir``); stops them all on request."""

    def __init__(self, workdir: Path, plugin_files, echo, prefix: str = "trial", verbose: bool = False):
        self.workdir, self.plugin_files, self.echo, self.prefix = workdir, list(plugin_files), echo, prefix
        self.verbose = verbose  # --verbose passed on: the child's own vaekit.console quiets it otherwise
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def log_path(self, rec: TrialRun) -> Path:
        return self.workdir / f"{self.prefix}_{rec.index:03d}.log"

    def __call__(self, rec: TrialRun, tags: dict[str, str], env: dict[str, str]) -> TrialRun:
        cfg_path = self.workdir / f"{self.prefix}_{rec.index:03d}.toml"
        cfg_path.write_text(rec.config.to_toml())
        log_path = self.log_path(rec)
        cmd = [sys.executable, "-m", "vaekit", "run", "--config", str(cfg_path), "--quiet"] + ["--verbose"] * self.verbose
        for plugin in self.plugin_files:
            cmd += ["--plugin", str(plugin)]
        env = {**os.environ, ENV_TAGS: json.dumps(tags), studies.ENV_PARENT: str(os.getpid()), **env}
        with self.lock:
            if self.stopping:
                rec.status, rec.error = "KILLED", "stopped before this trial started"
                return rec
            self.echo(f"[{rec.index}] start  {point_label(rec.params)}")
            with open(log_path, "w") as log:
                # A session of its own: a Ctrl-C at the terminal reaches this process only, which stops the
                # trial with SIGTERM (stop()); the trial stops by itself if this process dies (studies.follow_parent).
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
            self.procs.add(proc)
        rec.returncode = proc.wait()
        with self.lock:
            self.procs.discard(proc)
        text = log_path.read_text(errors="replace")
        errors = [line[len("Error: "):] for line in text.splitlines() if line.startswith("Error: ")]
        rec.error = errors[-1] if errors else (text.strip().splitlines() or [""])[-1] if rec.returncode else ""
        return rec

    def stop(self) -> None:
        """SIGTERM every running trial process (each then ends its own run KILLED) and wait for them.

        A second Ctrl-C or SIGTERM while waiting kills the processes that are left (SIGKILL) and
        is re-raised: none outlives the command.  Their runs, left RUNNING, are ended KILLED when
        the trial is collected.
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


def grid_sampler(grid: dict[str, list], seed: int):
    """Optuna's ``GridSampler`` over ``grid``, less its call of ``study.stop()`` once every point was told.

    ``Study.stop`` works only inside ``Study.optimize``: elsewhere it raises ``RuntimeError`` from within
    ``study.tell`` (after the trial's state is stored).  The runner asks and tells trials itself and stops
    when the study holds its ``n_trials``, so it has nothing to stop.
    """
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            """Nothing: ``GridSampler.after_trial`` does nothing but call ``study.stop()``."""

    return Grid(grid, seed=seed)


def trial_id(storage, study_name: str, number: int) -> int:
    """The id under which ``storage`` keeps trial ``number`` of study ``study_name`` (what
    :func:`vaekit.studies.trial_env` hands a trial's run), read through Optuna's public storage API:
    ``Trial`` and ``FrozenTrial`` keep theirs private."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def owner() -> dict:
    """This process, as a trial records it: a later process on this host can tell when it is gone."""
    import socket

    from vaekit import tracking

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": tracking.process_start(os.getpid())}


def counted(t) -> bool:
    """A trial that counts towards ``--trials``: not one an interruption stopped, not a surplus one, not waiting."""
    return t.state.name != "WAITING" and not t.user_attrs.get(INTERRUPTED) and not t.user_attrs.get(SURPLUS)


class StudyRunner:
    """Asks ``study`` for trials until it holds ``n_trials`` counted ones, ``jobs`` at a time, each a
    ``vaekit run`` process (``launcher``) nested under ``parent_id``; tells the study how each went.

    ``tags(rec)``: the tags of a trial's run beyond ``mlflow.parentRunId`` and ``vaekit.trial``;
    ``index(params, number)``: a trial's index in the table and file names; ``env(rec)``: environment entries
    for the trial's process beyond the runner's own (a study's :func:`vaekit.studies.trial_env`);
    ``on_done(rec)``: called (under a lock) as each trial ends.
    """

    def __init__(self, study, *, base: RunConfig, distributions: dict, parent_id: str, experiment_id: str, client,
                 launcher: Launcher, n_trials: int, jobs: int, metric: str, tags=lambda rec: {}, index=None,
                 env=lambda rec: {}, on_done=lambda rec: None, echo=print):
        self.study, self.base, self.distributions = study, base, distributions
        self.parent_id, self.experiment_id, self.client, self.launcher = parent_id, experiment_id, client, launcher
        self.n_trials, self.jobs, self.metric, self.tags, self.env = n_trials, jobs, metric, tags, env
        self.index = index or (lambda params, number: number)
        self.on_done, self.echo = on_done, echo
        self.lock = threading.Lock()
        self.done_lock = threading.Lock()
        self.records: list[TrialRun] = []

    def run(self) -> list[TrialRun]:
        from concurrent.futures import ThreadPoolExecutor

        workers = min(self.jobs, self.n_trials)  # a thread per trial at most: more would never get one
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(self._worker) for _ in range(workers)]
            for future in futures:
                future.result()
        except BaseException:
            self.launcher.stop()
            raise
        finally:
            pool.shutdown(wait=True)
        return sorted(self.records, key=lambda r: r.index)

    def _worker(self) -> None:
        while True:
            asked = self._next()
            if asked is None:
                return
            self._run_one(*asked)

    def _next(self):
        from optuna.trial import TrialState

        with self.lock:
            if self.launcher.stopping:
                return None
            if sum(counted(t) for t in self.study.get_trials(deepcopy=False)) >= self.n_trials:
                return None
            trial = self.study.ask(self.distributions)
            # Another process may have asked at the same moment: the trials numbered below this one decide.
            before = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number and counted(t)]
            if len(before) >= self.n_trials:
                trial.set_user_attr(SURPLUS, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            trial.set_user_attr(OWNER_ATTR, owner())
            rec = TrialRun(trial.number, dict(trial.params), self.index(dict(trial.params), trial.number))
            self.records.append(rec)
            return trial, rec

    def _run_one(self, trial, rec: TrialRun) -> None:
        try:
            rec.config = point_config(replace(self.base, run_name=point_label(rec.params)), rec.params,
                                      where=f"trial {rec.number}:")
        except VaekitError as exc:  # a sampled value that the settings refuse
            rec.error = str(exc)
        else:
            tags = {"mlflow.parentRunId": self.parent_id, "vaekit.trial": str(rec.number), **self.tags(rec)}
            with self.lock:  # env may read the study's storage, which the workers share
                env = self.env(rec)
            self.launcher(rec, tags, env)
        self._collect(rec)
        self._tell_study(trial, rec)
        with self.done_lock:
            self.echo(_outcome(rec))
            self.on_done(rec)

    def _collect(self, rec: TrialRun) -> None:
        """Find the trial's run; record a FAILED run for a trial that failed before its run started.

        A trial stopped (the command's Ctrl-C or SIGTERM, or its own process ended by SIGINT or SIGTERM)
        is *interrupted*: its run is KILLED, or it has none if it was stopped before the run started.
        A run still RUNNING has lost its process: KILLED when interrupted, else FAILED.
        """
        client = self.client
        stopped = rec.interrupted = self.launcher.stopping or rec.returncode in STOP_CODES
        found = client.search_runs([self.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`vaekit.trial` = '{rec.number}'"), max_results=10)
        run = found[0] if found else None
        if run is None:
            if stopped:  # stopped before its run started: nothing ran, nothing to record
                rec.status, rec.error = "KILLED", rec.error or "stopped before its run started"
            if rec.status == "KILLED":
                return
            tags = {"mlflow.parentRunId": self.parent_id, "vaekit.trial": str(rec.number), **self.tags(rec),
                    "vaekit.error": rec.error or "failed before its run started"}
            run = client.create_run(self.experiment_id, run_name=point_label(rec.params), tags=tags)
            for key, value in rec.params.items():
                client.log_param(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, "FAILED")
            run = client.get_run(run.info.run_id)
        elif run.info.status == "RUNNING":  # the process died without ending its run (e.g. SIGKILL)
            client.set_terminated(run.info.run_id, "KILLED" if stopped else "FAILED")
            run = client.get_run(run.info.run_id)
        rec.run_id = run.info.run_id
        rec.status = run.info.status
        metrics = run.data.metrics
        rec.metrics = {k: v for k, v in metrics.items() if k.startswith(TABLE_METRICS) or k == self.metric}
        rec.train_seconds = metrics.get("train_seconds")
        if run.data.tags.get(studies.PRUNED_TAG) == "true":
            rec.pruned_epoch = int(run.data.tags.get(studies.PRUNED_EPOCH_TAG, "0"))
        rec.error = rec.error or run.data.tags.get("vaekit.error", "")

    def _tell_study(self, trial, rec: TrialRun) -> None:
        from optuna.trial import TrialState

        with contextlib.suppress(Exception):  # a trial another process already ended cannot take attributes
            if rec.run_id:
                trial.set_user_attr("vaekit.run_id", rec.run_id)
        value = rec.metrics.get(self.metric)
        with self.lock:
            if rec.status == "FINISHED" and rec.pruned_epoch:
                rec.state = "PRUNED"
                self.study.tell(trial, state=TrialState.PRUNED)
            elif rec.status == "FINISHED" and value is not None and math.isfinite(value):
                rec.state = "COMPLETE"
                self.study.tell(trial, values=value)
            else:
                rec.state = "FAIL"
                if rec.status == "FINISHED":
                    rec.error = rec.error or f"the run logged no finite {self.metric}"
                interrupted = (rec.interrupted or self.launcher.stopping) and rec.status in ("KILLED", "PENDING")
                with contextlib.suppress(Exception):
                    trial.set_user_attr("vaekit.error", rec.error[:1000])
                    if interrupted:
                        trial.set_user_attr(INTERRUPTED, True)
                self.study.tell(trial, state=TrialState.FAIL)
                if interrupted:  # a rerun tries these settings again
                    self.study.enqueue_trial(rec.params, user_attrs={"vaekit.retry_of": rec.number})


def _outcome(rec: TrialRun) -> str:
    """The line printed as a trial ends: pruned, done (with its metrics), or how it failed."""
    label = f"[{rec.index}] "
    if rec.state == "PRUNED":
        return label + f"pruned {point_label(rec.params)} after epoch {rec.pruned_epoch}"
    if rec.state == "COMPLETE":
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(rec.metrics.items()))
        return label + f"done   {point_label(rec.params)}" + (f": {shown}" if shown else "")
    return label + f"{rec.status if rec.status != 'FINISHED' else 'FAILED'} {point_label(rec.params)}" + (
        f": {rec.error}" if rec.error else "")


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, columns padded, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
