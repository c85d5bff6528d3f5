"""``vaekit tune``: an Optuna study whose trials are ``vaekit run`` processes, nested under one parent run.

The study's trials are run by :class:`StudyRunner`, the one trial runner (``vaekit sweep`` is a
grid study on it too): it asks the study for a trial, starts ``python -m vaekit run`` with the
trial's settings (``--jobs`` of them at a time, each in its own process), finds the trial's MLflow
run when the process ends and tells the study how it went.

Contract:

- The space file (TOML) names what varies: a run setting or a component option (``KIND.OPTION``),
  each with a list of values (choices) or a range ``{low, high, log, step}`` (integers when low,
  high and step are).  Every name, and every choice and range end (and a float range's middle),
  is checked with the run's settings and the components' option ranges before anything starts;
  a mistake is one error line, no study and no run.
- The study lives in ``--storage``: a journal file (default ``optuna.journal`` beside the sqlite
  tracking store, else in the working directory) or any database URL Optuna takes.  Running the
  command again continues the study; processes on one or many machines may work on it at once.
  ``--trials N`` is the study's size: trials are started until the study holds N of them
  (finished, pruned, failed or running; those an interruption stopped do not count).
- MLflow: one parent run per study (tag ``vaekit.study``, found again by every process through
  the study), each trial a nested run with its params, metrics and artifacts like any run, tagged
  ``vaekit.trial`` (its number).  A pruned trial's run ends FINISHED with ``vaekit.pruned = true``
  and ``vaekit.pruned_epoch``; a failed trial's run ends FAILED and the study goes on.  As trials
  end, the parent gets the best trial (tags ``vaekit.best_trial``, ``vaekit.best_run_id``, metric
  ``best_<metric>`` and the best run's ``test_*`` as ``best_test_*``), ``trials.txt`` (every
  trial) and ``plots/`` (optimization history, parameter importances, parallel coordinates).
- Ctrl-C or SIGTERM stops the running trials (their runs end KILLED, the trials FAIL with user
  attribute ``vaekit.interrupted``, and their settings are queued again), so a rerun continues.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vaekit import trial as trials
from vaekit.components import KINDS, resolve
from vaekit.config import RunConfig, merge, read_toml
from vaekit.errors import ConfigError, TrainingError, VaekitError
from vaekit.runlog import ENV_TAGS

#: Settings a study may not vary: they say where runs go, not what they are.
NOT_VARIED = {"options", "tracking_uri", "experiment", "run_name"}
SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ("minimize", "maximize")
#: Trial user attributes: stopped by an interruption (queued again, not counted), beyond --trials.
INTERRUPTED, SURPLUS = "vaekit.interrupted", "vaekit.surplus"
#: Study user attributes: what the study varies, its objective, its parent run.
SPACE_ATTR, METRIC_ATTR, PARENT_ATTR = "vaekit.space", "vaekit.metric", "vaekit.parent_run_id"
#: Trial user attribute: the process running it (host, pid, start time).
OWNER_ATTR = "vaekit.owner"
#: A grid from an integer range may have at most this many values; a whole grid (their product) this many points.
MAX_GRID = 10000
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
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
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
    return ",".join(f"{k}={_short(v)}" for k, v in point.items())


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- the space ----------------------------------------------------------------------------------------------

_RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Param:
    """One varied setting or option: ``choices``, or a range ``low``..``high`` (``log``, ``step``)."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)

    def distribution(self):
        import optuna

        d = optuna.distributions
        if self.choices is not None:
            return d.CategoricalDistribution(self.choices)
        if self.is_int:
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def checked_values(self) -> list:
        """The values checked before a study starts: every choice; a range's ends (and for a float range a point
        inside, a third of the way, which an integer setting or option refuses)."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            return [self.low, self.high]
        middle = self.low ** (2 / 3) * self.high ** (1 / 3) if self.log else self.low + (self.high - self.low) / 3
        return [self.low, self.high, middle]

    def grid_values(self, where: str) -> list:
        if self.choices is not None:
            return list(self.choices)
        if not self.is_int:
            raise ConfigError(f"{where}: {self.name} is a float range; --sampler grid needs its values as a list")
        values = list(range(self.low, self.high + 1, self.step or 1))
        if len(values) > MAX_GRID:
            raise ConfigError(f"{where}: {self.name} has {len(values)} values; --sampler grid takes at most {MAX_GRID}")
        return values

    def describe(self) -> str:
        if self.choices is not None:
            return json.dumps(list(self.choices))
        extra = (", log" if self.log else "") + (f", step {self.step}" if self.step else "")
        return f"{self.low}..{self.high}{extra}"

    def to_dict(self) -> dict:
        return {"name": self.name, "choices": list(self.choices) if self.choices is not None else None, "low": self.low,
                "high": self.high, "log": self.log, "step": self.step}


def load_space(path) -> list[Param]:
    """Read a space file: ``KEY = [choices]`` or ``KEY = {low, high, log, step}`` per setting or ``KIND.OPTION``.

    ``[KIND]`` tables (or ``KIND.OPTION`` keys without quotes) name that kind's options.
    """
    path = Path(path)
    where = f"--space {path}"
    raw = read_toml(path, where)
    items = []
    for key, value in raw.items():
        if key in KINDS and isinstance(value, dict) and not set(value) <= _RANGE_KEYS:
            items.extend((f"{key}.{name}", v) for name, v in value.items())  # a [loss] table, or loss.lambda unquoted
        else:
            items.append((key, value))
    if not items:
        raise ConfigError(f'{where}: varies nothing; name a setting or option, e.g. "loss.lambda" = '
                          "{low = 100, high = 5000, log = true} or latent_dim = [8, 16, 32]")
    params, seen = [], set()
    for key, value in items:
        name = check_key(key, f"{where}: {key}")
        if name in seen:
            raise ConfigError(f"{where}: {name} is given twice")
        seen.add(name)
        params.append(_param(name, value, f"{where}: {name}"))
    return params


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(name: str, value, where: str) -> Param:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list; give the values to try")
        bad = [v for v in value if not isinstance(v, (str, int, float, bool))]
        if bad:
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans, got {bad[0]!r}")
        return Param(name, choices=tuple(value))
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a list of values or {{low = ..., high = ...}}, got {value!r}")
    unknown = sorted(set(value) - _RANGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in a range; a range takes low, high, log and step")
    low, high, log, step = value.get("low"), value.get("high"), value.get("log", False), value.get("step")
    for key, v in (("low", low), ("high", high)):
        if not _number(v) or not math.isfinite(v):
            raise ConfigError(f"{where}: {key} must be a finite number, got {v!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low = {low}, high = {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None:
        if not _number(step) or not step > 0:
            raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{where}: a range takes log or step, not both")
    return Param(name, low=low, high=high, log=log, step=step)


def check_space(base: RunConfig, params: list[Param], where: str) -> None:
    """Check every value :meth:`Param.checked_values` names, each with the other params at their first value,
    against the run's settings and the components' option names and ranges.  Raises a one-line error."""
    first = {p.name: p.checked_values()[0] for p in params}
    for p in params:
        for value in p.checked_values():
            label = f"{where}: {p.name}={_short(value)}"
            try:
                cfg = point_config(base, {**first, p.name: value}, where=None)
                resolve(cfg)  # unknown components, option names and values outside declared ranges fail here
            except VaekitError as exc:
                raise type(exc)(f"{label}: {exc}") from None


def tpe_startup(n_trials: int) -> int:
    """Trials TPE draws at random before it models the results: a quarter of the study, 3 to 10."""
    return min(10, max(3, n_trials // 4))


def make_sampler(name: str, params: list[Param], seed: int, where: str, n_trials: int):
    """The Optuna sampler ``name``; grid needs every param as a list (or an integer range).

    TPE starts from a quarter of the study's trials drawn at random (3 to 10, Optuna's default being
    10): a 16-trial study keeps 12 guided trials instead of 6.
    """
    import optuna

    if name == "tpe":
        # Unseeded: processes sharing a study would otherwise draw the same start-up trials.
        return optuna.samplers.TPESampler(n_startup_trials=tpe_startup(n_trials))
    if name == "random":
        return optuna.samplers.RandomSampler()
    if name == "grid":
        size = grid_size(params, where)  # before Optuna lists every point of the product
        if size > MAX_GRID:
            counts = " × ".join(str(len(p.grid_values(where))) for p in params)
            raise ConfigError(f"{where}: the grid has {size} points ({counts}); --sampler grid takes at most {MAX_GRID}: "
                              "give fewer values, or use --sampler tpe or random")
        return optuna.samplers.GridSampler({p.name: p.grid_values(where) for p in params}, seed=seed)
    raise ConfigError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def grid_size(params: list[Param], where: str) -> int:
    return math.prod(len(p.grid_values(where)) for p in params)


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

    @property
    def point(self) -> dict[str, Any]:
        return self.params


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
        env = {**os.environ, ENV_TAGS: json.dumps(tags), trials.ENV_PARENT: str(os.getpid()), **env}
        with self.lock:
            if self.stopping:
                rec.status, rec.error = "KILLED", "stopped before this trial started"
                return rec
            self.echo(f"[{rec.index}] start  {point_label(rec.params)}")
            with open(log_path, "w") as log:
                # A session of its own: a Ctrl-C at the terminal reaches this process only, which stops the
                # trial with SIGTERM (stop()); the trial stops by itself if this process dies (trial.follow_parent).
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


def _tell(study, trial, **kwargs) -> None:
    """``study.tell``; the grid sampler's call of ``study.stop()`` once the grid is done (which outside
    ``optimize`` raises after the trial's state is stored) is no error here: the runner counts trials itself."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def owner() -> dict:
    """This process, as a trial records it: a later process on this host can tell when it is gone."""
    import socket

    from vaekit import tracking

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": tracking.process_start(os.getpid())}


def reap_stale(study, echo) -> None:
    """Trials left RUNNING by a process on this host that is gone (SIGKILL, a power cut): FAIL, marked
    interrupted, their settings queued again, so they neither count nor block the study."""
    import socket

    from optuna.trial import TrialState

    from vaekit import tracking

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(OWNER_ATTR) or {}
        if who.get("host") != host or not who.get("start") or tracking.process_start(who["pid"]) == who["start"]:
            continue
        with contextlib.suppress(Exception):  # another process may be reaping it at the same moment
            study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
            _tell(study, t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"vaekit.retry_of": t.number})
            echo(f"trial {t.number}: its process ({who['pid']}) is gone; marked FAIL and queued again")


def counted(t) -> bool:
    """A trial that counts towards ``--trials``: not one an interruption stopped, not a surplus one, not waiting."""
    return t.state.name != "WAITING" and not t.user_attrs.get(INTERRUPTED) and not t.user_attrs.get(SURPLUS)


class StudyRunner:
    """Asks ``study`` for trials until it holds ``n_trials`` counted ones, ``jobs`` at a time, each a
    ``vaekit run`` process (``launcher``) nested under ``parent_id``; tells the study how each went.

    ``tags(rec)``: the tags of a trial's run beyond ``mlflow.parentRunId`` and ``vaekit.trial``;
    ``index(params)``: a trial's index in the table and file names; ``pruning``: what
    :func:`vaekit.trial.trial_env` needs (storage, study, pruner, startup, metric), or None;
    ``on_done(rec)``: called (under a lock) as each trial ends.
    """

    def __init__(self, study, *, base: RunConfig, distributions: dict, parent_id: str, experiment_id: str, client,
                 launcher: Launcher, n_trials: int, jobs: int, metric: str, tags=lambda rec: {}, index=None,
                 pruning: dict | None = None, on_done=lambda rec: None, echo=print):
        self.study, self.base, self.distributions = study, base, distributions
        self.parent_id, self.experiment_id, self.client, self.launcher = parent_id, experiment_id, client, launcher
        self.n_trials, self.jobs, self.metric, self.tags, self.pruning = n_trials, jobs, metric, tags, pruning
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
                _tell(self.study, trial, state=TrialState.FAIL)
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
            env = trials.trial_env(**self.pruning, trial_id=trial._trial_id) if self.pruning else {}
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
        if run.data.tags.get(trials.PRUNED_TAG) == "true":
            rec.pruned_epoch = int(run.data.tags.get(trials.PRUNED_EPOCH_TAG, "0"))
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
                _tell(self.study, trial, state=TrialState.PRUNED)
            elif rec.status == "FINISHED" and value is not None and math.isfinite(value):
                rec.state = "COMPLETE"
                _tell(self.study, trial, values=value)
            else:
                rec.state = "FAIL"
                if rec.status == "FINISHED":
                    rec.error = rec.error or f"the run logged no finite {self.metric}"
                interrupted = (rec.interrupted or self.launcher.stopping) and rec.status in ("KILLED", "PENDING")
                with contextlib.suppress(Exception):
                    trial.set_user_attr("vaekit.error", rec.error[:1000])
                    if interrupted:
                        trial.set_user_attr(INTERRUPTED, True)
                _tell(self.study, trial, state=TrialState.FAIL)
                if interrupted:  # a rerun tries these settings again
                    self.study.enqueue_trial(rec.params, user_attrs={"vaekit.retry_of": rec.number})


def _outcome(rec: TrialRun) -> str:
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


# --- studies and their parent runs -------------------------------------------------------------------------


def default_storage(tracking_uri: str) -> str:
    """``optuna.journal`` beside a sqlite tracking store, else in the working directory."""
    from vaekit import tracking

    db = tracking.sqlite_path(tracking_uri)
    return str((db.parent if db is not None else Path.cwd()) / "optuna.journal")


def open_study(storage, name: str, sampler, direction: str):
    """(study, created): the study ``name`` in ``storage``, created when there is none yet."""
    import optuna

    try:
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction=direction), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler), False


def check_study(study, space: list[dict], metric: str, direction: str, where: str) -> None:
    """Refuse to continue a study with another space, metric or direction."""
    attrs = study.user_attrs
    if study.direction.name.lower() != direction:
        raise ConfigError(f"{where}: the study optimizes in direction {study.direction.name.lower()}, not {direction}; "
                          "name another --study")
    if SPACE_ATTR in attrs and attrs[SPACE_ATTR] != space:
        was = ", ".join(f"{p['name']}" for p in attrs[SPACE_ATTR])
        raise ConfigError(f"{where}: the study was started with another space (it varies {was}); name another --study "
                          "or keep the space file as it was")
    if METRIC_ATTR in attrs and attrs[METRIC_ATTR] != metric:
        raise ConfigError(f"{where}: the study optimizes {attrs[METRIC_ATTR]}, not {metric}; name another --study")


def find_parent(study, client, experiment_id: str, create, wait: float = 60.0) -> str:
    """The study's parent run: the one the study names (waiting up to ``wait`` s for the process that created
    the study to name it), else one tagged ``vaekit.study`` with the study's name, else a new one (``create()``)."""
    deadline = time.monotonic() + wait
    while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        with contextlib.suppress(Exception):
            run = client.get_run(run_id)
            if run.info.lifecycle_stage == "active" and run.info.experiment_id == experiment_id:
                return run_id
    which = f"tags.`vaekit.study` = '{study.study_name}' and tags.`vaekit.tune` = 'parent'"
    found = client.search_runs([experiment_id], filter_string=which, order_by=["attributes.start_time ASC"], max_results=1)
    return found[0].info.run_id if found else create()


@dataclass
class TuneResult:
    study_name: str
    storage: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    ran: list[TrialRun]
    table: str
    best: dict | None


def tune(base: RunConfig, space_file, n_trials: int, study_name: str | None = None, storage: str | None = None,
         jobs: int = 1, sampler: str = "tpe", pruner: str = "median", pruner_startup: int = 5, metric: str = "test_mse",
         direction: str = "minimize", plugin_files=(), echo=print, verbose: bool = False) -> TuneResult:
    """Run (or continue) a study until it holds ``n_trials`` trials; return this process's trials, the table
    of all of them and the best.  Raises :class:`TrainingError` (``table`` attribute) if every trial this
    process ran failed."""
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from vaekit import __version__, tracking

    check_jobs(jobs)
    for flag, ok, what in [("--trials", n_trials >= 1, f"must be at least 1, got {n_trials}"),
                           ("--pruner-startup", pruner_startup >= 0, f"must be 0 or more, got {pruner_startup}"),
                           ("--direction", direction in DIRECTIONS, f"{direction!r}: choose minimize or maximize"),
                           ("--sampler", sampler in SAMPLERS, f"{sampler!r}: choose one of {', '.join(SAMPLERS)}"),
                           ("--pruner", pruner in trials.PRUNERS, f"{pruner!r}: choose one of {', '.join(trials.PRUNERS)}"),
                           ("--metric", bool(metric.strip()), "must name a metric, e.g. test_mse")]:
        if not ok:
            raise ConfigError(f"{flag} {what}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = f"--space {space_file}"
    params = load_space(space_file)
    uri = tracking.resolve_tracking_uri(base.tracking_uri)
    base = replace(base, tracking_uri=uri)
    check_space(base, params, where)
    sampler_obj = make_sampler(sampler, params, base.seed, where, n_trials)
    if sampler == "grid" and n_trials > grid_size(params, where):
        echo(f"--trials {n_trials}: the grid has {grid_size(params, where)} points; running those")
        n_trials = grid_size(params, where)
    study_name = study_name or Path(space_file).stem
    spec = storage if storage and trials.is_url(storage) else str(Path(storage or default_storage(uri)).expanduser().resolve())
    trials.check_storage(spec, uri)  # reads only: before the store or the study is written
    experiment_id = tracking.check_store(uri, base.experiment)  # before the study: a bad store leaves no study
    study, created = open_study(trials.open_storage(spec), study_name, sampler_obj, direction)
    space = [p.to_dict() for p in params]
    study_where = f"--study {study_name} in {trials.shown_storage(spec)}"
    if created:
        study.set_user_attr(SPACE_ATTR, space)
        study.set_user_attr(METRIC_ATTR, metric)
    check_study(study, space, metric, direction, study_where)
    client = MlflowClient(uri)

    def create_parent() -> str:
        tags = {"vaekit.version": __version__, "vaekit.study": study_name, "vaekit.tune": "parent",
                "vaekit.study.storage": trials.shown_storage(spec)}
        run_id = client.create_run(experiment_id, run_name=f"tune {study_name}", tags=tags).info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
            **{f"space.{p.name}": p.describe() for p in params}, "tune.metric": metric, "tune.direction": direction,
            "tune.sampler": sampler, "tune.pruner": pruner}.items()])
        client.log_text(run_id, base.to_toml(), "config.toml")
        return run_id

    if created:
        parent_id = create_parent()
        study.set_user_attr(PARENT_ATTR, parent_id)
    else:
        parent_id = find_parent(study, client, experiment_id, create_parent)
        if study.user_attrs.get(PARENT_ATTR) is None:
            study.set_user_attr(PARENT_ATTR, parent_id)
    check_study(study, space, metric, direction, study_where)  # a study another process was creating meanwhile

    reap_stale(study, echo)
    distributions = {p.name: p.distribution() for p in params}
    pruning = {"storage": spec, "study": study_name, "pruner": pruner, "startup": pruner_startup,
               "metric": trials.epoch_metric(metric, base.validation_split)}
    n_before = sum(counted(t) for t in study.get_trials(deepcopy=False))
    echo(f"study {study_name} in {trials.shown_storage(spec)}: {n_before} of {n_trials} trials; parent run {parent_id}, "
         f"{jobs} at a time")
    with tempfile.TemporaryDirectory(prefix="vaekit-tune-") as tmp, \
            tracking.tracked_run(experiment_id, run_id=parent_id):
        parent = ParentLog(client, study, parent_id, experiment_id, params, metric, Path(tmp))
        launcher = Launcher(Path(tmp), plugin_files, echo, verbose=verbose)
        runner = StudyRunner(study, base=base, distributions=distributions, parent_id=parent_id,
                             experiment_id=experiment_id, client=client, launcher=launcher, n_trials=n_trials, jobs=jobs,
                             metric=metric, tags=lambda rec: {"vaekit.study": study_name}, pruning=pruning,
                             on_done=lambda rec: parent.refresh(launcher.log_path(rec)), echo=echo)
        try:
            ran = runner.run()
        finally:
            with contextlib.suppress(Exception):
                parent.refresh()
        table, best = parent.table, parent.best
        if ran and all(r.state == "FAIL" for r in ran):
            error = TrainingError(f"all {len(ran)} trials this command ran in study {study_name} failed; first error: "
                                  f"{ran[0].error}")
            error.table = table
            raise error
    if any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
        with contextlib.suppress(Exception):  # another process still works on the study
            client.update_run(parent_id, status="RUNNING")
    return TuneResult(study_name, trials.shown_storage(spec), parent_id, experiment_id, uri, ran, table, best)


class ParentLog:
    """What the study's parent run shows: the table of every trial, the best one, counts and Optuna's plots."""

    PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")

    def __init__(self, client, study, parent_id: str, experiment_id: str, params: list[Param], metric: str, tmp: Path):
        self.client, self.study, self.parent_id, self.experiment_id = client, study, parent_id, experiment_id
        self.params, self.metric, self.tmp = params, metric, tmp
        self.table, self.best = "", None

    def refresh(self, log_file: Path | None = None) -> None:
        client, run_id = self.client, self.parent_id
        if log_file is not None and log_file.exists():
            client.log_artifact(run_id, str(log_file), "trials")
        all_trials = [t for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS)]
        runs = {r.data.tags.get("vaekit.trial"): r for r in client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=50000)}
        self.table = self._table(all_trials, runs)
        client.log_text(run_id, self.table + "\n", "trials.txt")
        states = [t.state.name for t in all_trials]
        client.log_batch(run_id, metrics=[_metric(f"trials_{s.lower()}", states.count(s)) for s in ("COMPLETE", "PRUNED", "FAIL")])
        try:
            best = self.study.best_trial
        except ValueError:  # no complete trial yet
            best = None
        if best is not None:
            run = runs.get(str(best.number))
            self.best = {"number": best.number, "value": best.value, "params": best.params,
                         "run_id": run.info.run_id if run else None}
            client.set_tag(run_id, "vaekit.best_trial", str(best.number))
            if run:
                client.set_tag(run_id, "vaekit.best_run_id", run.info.run_id)
            metrics = [_metric(f"best_{self.metric}", best.value)]
            if run:
                metrics += [_metric(f"best_{k}", v) for k, v in run.data.metrics.items() if k.startswith("test_") and k != self.metric]
            client.log_batch(run_id, metrics=metrics)
        self._plots(all_trials)

    def _table(self, all_trials, runs) -> str:
        names = [p.name for p in self.params]
        metric_names = sorted({k for r in runs.values() for k in r.data.metrics if k.startswith("test_") or k == self.metric})
        header = ["#", *names, "state", *metric_names, "run id"]
        rows = []
        for t in sorted(all_trials, key=lambda t: t.number):
            run = runs.get(str(t.number))
            state = t.state.name + (" (interrupted)" if t.user_attrs.get(INTERRUPTED) else "")
            if run and run.data.tags.get(trials.PRUNED_TAG) == "true":
                state = f"PRUNED@{run.data.tags.get(trials.PRUNED_EPOCH_TAG)}"
            m = run.data.metrics if run else {}
            rows.append([str(t.number), *(_short(t.params[n]) if n in t.params else "-" for n in names), state,
                         *(f"{m[k]:.4f}" if k in m else "-" for k in metric_names), run.info.run_id if run else "-"])
        return format_rows(header, rows)

    def _plots(self, all_trials) -> None:
        import warnings

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as vis

        complete = [t for t in all_trials if t.state.name == "COMPLETE"]
        folder = self.tmp / "plots"
        folder.mkdir(exist_ok=True)
        drawn = False
        for name in self.PLOTS:
            need = 2 if name == "param_importances" else 1
            if len(complete) < need:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = getattr(vis, f"plot_{name}")(self.study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                drawn = True
            except Exception:  # noqa: S112  importances fail on trials that all scored alike: that plot waits
                continue
            finally:
                plt.close("all")
        if drawn:
            self.client.log_artifacts(self.parent_id, str(folder), "plots")


def _metric(key: str, value: float):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)
