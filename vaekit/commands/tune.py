"""``vaekit tune``: an Optuna study whose trials are ``vaekit run`` processes, nested under one parent run.

The study's trials are run by :class:`vaekit.launcher.StudyRunner`, the trial runner ``vaekit sweep``
also runs on: it asks the study for a trial, starts ``python -m vaekit run`` with the trial's settings
(``--jobs`` of them at a time, each in its own process), finds the trial's MLflow run when the process
ends and tells the study how it went.

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
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vaekit import kinds, studies
from vaekit.components import resolve
from vaekit.config import RunConfig, read_toml
from vaekit.errors import ConfigError, TrainingError, VaekitError
from vaekit.launcher import (
    INTERRUPTED,
    OWNER_ATTR,
    SURPLUS,
    Launcher,
    StudyRunner,
    TrialRun,
    check_jobs,
    check_key,
    counted,
    format_rows,
    grid_sampler,
    point_config,
    short,
    trial_id,
)

SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ("minimize", "maximize")
#: Study user attributes: what the study varies, its objective, its parent run.
SPACE_ATTR, METRIC_ATTR, PARENT_ATTR = "vaekit.space", "vaekit.metric", "vaekit.parent_run_id"
#: A grid from an integer range may have at most this many values; a whole grid (their product) this many points.
MAX_GRID = 10000


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
        if key in kinds.names() and isinstance(value, dict) and not set(value) <= _RANGE_KEYS:
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
    """A space file's entry ``name = value`` as a :class:`Param`: a list of choices or a range table."""
    if isinstance(value, list):
        return Param(name, choices=_choices(value, where))
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a list of values or {{low = ..., high = ...}}, got {value!r}")
    return Param(name, **_range(value, where))


def _choices(value: list, where: str) -> tuple:
    if not value:
        raise ConfigError(f"{where}: an empty list; give the values to try")
    bad = [v for v in value if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise ConfigError(f"{where}: choices must be numbers, strings or booleans, got {bad[0]!r}")
    return tuple(value)


def _range(value: dict, where: str) -> dict:
    """``{low, high, log, step}`` checked: finite ends, low below high, a log range above 0, log or step."""
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
    _check_step(step, log, where)
    return {"low": low, "high": high, "log": log, "step": step}


def _check_step(step, log: bool, where: str) -> None:
    if step is None:
        return
    if not _number(step) or not step > 0:
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
    if log:
        raise ConfigError(f"{where}: a range takes log or step, not both")


def check_space(base: RunConfig, params: list[Param], where: str) -> None:
    """Check every value :meth:`Param.checked_values` names, each with the other params at their first value,
    against the run's settings and the components' option names and ranges.  Raises a one-line error."""
    first = {p.name: p.checked_values()[0] for p in params}
    for p in params:
        for value in p.checked_values():
            label = f"{where}: {p.name}={short(value)}"
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
        return grid_sampler({p.name: p.grid_values(where) for p in params}, seed)
    raise ConfigError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def grid_size(params: list[Param], where: str) -> int:
    return math.prod(len(p.grid_values(where)) for p in params)


def reap_stale(study, storage, echo) -> None:
    """Trials left RUNNING by a process on this host that is gone (SIGKILL, a power cut): FAIL, marked
    interrupted, their settings queued again, so they neither count nor block the study (kept in ``storage``)."""
    import socket

    from optuna.trial import TrialState

    from vaekit import tracking

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(OWNER_ATTR) or {}
        if who.get("host") != host or not who.get("start") or tracking.process_start(who["pid"]) == who["start"]:
            continue
        with contextlib.suppress(Exception):  # another process may be reaping it at the same moment
            storage.set_trial_user_attr(trial_id(storage, study.study_name, t.number), INTERRUPTED, True)
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"vaekit.retry_of": t.number})
            echo(f"trial {t.number}: its process ({who['pid']}) is gone; marked FAIL and queued again")


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


@dataclass(frozen=True)
class StudySettings:
    """What ``vaekit tune`` asks of a study, beside the runs' own settings (its flags, one field each)."""

    space_file: str | Path  # --space: what varies
    n_trials: int  # --trials: the study's size, counted over every process working on it
    name: str | None = None  # --study [the space file's name without .toml]
    storage: str | None = None  # --storage: a journal file or a database URL [optuna.journal beside the store]
    jobs: int = 1  # trials at a time in this process
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup: int = studies.PRUNER_STARTUP
    metric: str = "test_mse"
    direction: str = "minimize"

    @property
    def where(self) -> str:
        return f"--space {self.space_file}"

    @property
    def study_name(self) -> str:
        return self.name or Path(self.space_file).stem

    def check(self) -> None:
        """:class:`ConfigError` naming the first flag that is out of its range."""
        check_jobs(self.jobs)
        for flag, ok, what in [
                ("--trials", self.n_trials >= 1, f"must be at least 1, got {self.n_trials}"),
                ("--pruner-startup", self.pruner_startup >= 0, f"must be 0 or more, got {self.pruner_startup}"),
                ("--direction", self.direction in DIRECTIONS, f"{self.direction!r}: choose minimize or maximize"),
                ("--sampler", self.sampler in SAMPLERS, f"{self.sampler!r}: choose one of {', '.join(SAMPLERS)}"),
                ("--pruner", self.pruner in studies.PRUNERS,
                 f"{self.pruner!r}: choose one of {', '.join(studies.PRUNERS)}"),
                ("--metric", bool(self.metric.strip()), "must name a metric, e.g. test_mse")]:
            if not ok:
                raise ConfigError(f"{flag} {what}")


@dataclass
class OpenStudy:
    """The study this process works on: the Optuna study, the storage that keeps it, and where that is."""

    study: Any
    storage: Any
    spec: str  # the storage as --storage named it (a journal file's absolute path)
    created: bool  # by this process

    @property
    def shown(self) -> str:
        return studies.shown_storage(self.spec)


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


def tune(base: RunConfig, settings: StudySettings, plugin_files=(), echo=print, verbose: bool = False) -> TuneResult:
    """Run (or continue) a study until it holds ``settings.n_trials`` trials; return this process's trials, the
    table of all of them and the best.  Raises :class:`TrainingError` (``table`` attribute) if every trial this
    process ran failed."""
    import optuna
    from mlflow.tracking import MlflowClient

    from vaekit import tracking

    settings.check()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_space(settings.space_file)
    base = replace(base, tracking_uri=tracking.resolve_tracking_uri(base.tracking_uri))
    check_space(base, params, settings.where)
    sampler = make_sampler(settings.sampler, params, base.seed, settings.where, settings.n_trials)
    settings = _fit_grid(settings, params, echo)
    experiment_id, opened = _open(base, settings, params, sampler)
    client = MlflowClient(base.tracking_uri)
    parent_id = _parent_run(opened, base, settings, params, client, experiment_id)
    reap_stale(opened.study, opened.storage, echo)
    ran, table, best = _run_trials(opened, base, settings, params, client, experiment_id, parent_id, plugin_files,
                                   echo, verbose)
    if any(t.state.name == "RUNNING" for t in opened.study.get_trials(deepcopy=False)):
        with contextlib.suppress(Exception):  # another process still works on the study
            client.update_run(parent_id, status="RUNNING")
    return TuneResult(settings.study_name, opened.shown, parent_id, experiment_id, base.tracking_uri, ran, table, best)


def _fit_grid(settings: StudySettings, params: list[Param], echo) -> StudySettings:
    """A grid study holds at most its grid's points: ``--trials`` beyond them is cut down, and said."""
    size = grid_size(params, settings.where) if settings.sampler == "grid" else None
    if size is not None and settings.n_trials > size:
        echo(f"--trials {settings.n_trials}: the grid has {size} points; running those")
        return replace(settings, n_trials=size)
    return settings


def _open(base: RunConfig, settings: StudySettings, params: list[Param], sampler) -> tuple[str, OpenStudy]:
    """(experiment id, the study): the storage and the tracking store checked before either is written, then the
    study opened (created if new) and checked to vary what the space varies, on the same metric and direction."""
    from vaekit import tracking

    storage = settings.storage
    spec = storage if storage and studies.is_url(storage) else str(
        Path(storage or default_storage(base.tracking_uri)).expanduser().resolve())
    studies.check_storage(spec, base.tracking_uri)  # reads only: before the store or the study is written
    experiment_id = tracking.check_store(base.tracking_uri, base.experiment)  # before the study: a bad store leaves none
    opened_storage = studies.open_storage(spec)
    study, created = open_study(opened_storage, settings.study_name, sampler, settings.direction)
    opened = OpenStudy(study, opened_storage, spec, created)
    space = [p.to_dict() for p in params]
    if created:
        study.set_user_attr(SPACE_ATTR, space)
        study.set_user_attr(METRIC_ATTR, settings.metric)
    check_study(study, space, settings.metric, settings.direction, _study_where(settings, opened))
    return experiment_id, opened


def _study_where(settings: StudySettings, opened: OpenStudy) -> str:
    return f"--study {settings.study_name} in {opened.shown}"


def _parent_run(opened: OpenStudy, base: RunConfig, settings: StudySettings, params: list[Param], client,
                experiment_id: str) -> str:
    """The study's parent run: created with the study, else found (or created, if it is gone) and named in it."""
    import mlflow

    from vaekit import __version__

    study, name = opened.study, settings.study_name

    def create_parent() -> str:
        tags = {"vaekit.version": __version__, "vaekit.study": name, "vaekit.tune": "parent",
                "vaekit.study.storage": opened.shown}
        run_id = client.create_run(experiment_id, run_name=f"tune {name}", tags=tags).info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
            **{f"space.{p.name}": p.describe() for p in params}, "tune.metric": settings.metric,
            "tune.direction": settings.direction, "tune.sampler": settings.sampler, "tune.pruner": settings.pruner}.items()])
        client.log_text(run_id, base.to_toml(), "config.toml")
        return run_id

    if opened.created:
        parent_id = create_parent()
        study.set_user_attr(PARENT_ATTR, parent_id)
    else:
        parent_id = find_parent(study, client, experiment_id, create_parent)
        if study.user_attrs.get(PARENT_ATTR) is None:
            study.set_user_attr(PARENT_ATTR, parent_id)
    # A study another process was creating meanwhile:
    check_study(study, [p.to_dict() for p in params], settings.metric, settings.direction,
                _study_where(settings, opened))
    return parent_id


def _run_trials(opened: OpenStudy, base: RunConfig, settings: StudySettings, params: list[Param], client,
                experiment_id: str, parent_id: str, plugin_files, echo, verbose: bool):
    """(this process's trials, the table of all, the best): trials run until the study holds its size, each
    pruned through its run's environment, the parent run refreshed as each ends.  Raises if all failed."""
    from vaekit import tracking

    study, name = opened.study, settings.study_name
    distributions = {p.name: p.distribution() for p in params}
    epoch_metric = studies.epoch_metric(settings.metric, base.validation_split)

    def trial_env(rec: TrialRun) -> dict[str, str]:
        return studies.trial_env(opened.spec, name, trial_id(opened.storage, name, rec.number), settings.pruner,
                                 settings.pruner_startup, epoch_metric)

    n_before = sum(counted(t) for t in study.get_trials(deepcopy=False))
    echo(f"study {name} in {opened.shown}: {n_before} of {settings.n_trials} trials; parent run {parent_id}, "
         f"{settings.jobs} at a time")
    with tempfile.TemporaryDirectory(prefix="vaekit-tune-") as tmp, \
            tracking.tracked_run(experiment_id, run_id=parent_id):
        parent = ParentLog(client, study, parent_id, experiment_id, params, settings.metric, Path(tmp))
        launcher = Launcher(Path(tmp), plugin_files, echo, verbose=verbose)
        runner = StudyRunner(study, base=base, distributions=distributions, parent_id=parent_id,
                             experiment_id=experiment_id, client=client, launcher=launcher, n_trials=settings.n_trials,
                             jobs=settings.jobs, metric=settings.metric, tags=lambda rec: {"vaekit.study": name},
                             env=trial_env, on_done=lambda rec: parent.refresh(launcher.log_path(rec)), echo=echo)
        try:
            ran = runner.run()
        finally:
            with contextlib.suppress(Exception):
                parent.refresh()
        if ran and all(r.state == "FAIL" for r in ran):
            error = TrainingError(f"all {len(ran)} trials this command ran in study {name} failed; first error: "
                                  f"{ran[0].error}")
            error.table = parent.table
            raise error
    return ran, parent.table, parent.best


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
            if run and run.data.tags.get(studies.PRUNED_TAG) == "true":
                state = f"PRUNED@{run.data.tags.get(studies.PRUNED_EPOCH_TAG)}"
            m = run.data.metrics if run else {}
            rows.append([str(t.number), *(short(t.params[n]) if n in t.params else "-" for n in names), state,
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
