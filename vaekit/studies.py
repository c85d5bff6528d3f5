"""Optuna studies as vaekit keeps them: where a study is stored, its pruners, and a trial's side in its run.

``vaekit tune`` starts each trial as a ``vaekit run`` process and hands it, in the environment
variable :data:`ENV_TRIAL`, the study's storage, name, pruner and the trial's id.  That run's
:func:`callbacks` then reports the per-epoch validation metric to the trial after every epoch
and, when the pruner says so, stops training at the end of that epoch: the run goes on to
evaluate and log as any run, ends FINISHED, and carries the tags ``vaekit.pruned = true`` and
``vaekit.pruned_epoch`` (1-based, the last epoch trained).  Without the variable (a plain run, a
sweep's child) :func:`callbacks` is empty.

This module sits below both ``vaekit.run`` and ``vaekit.tune``; Optuna is imported only when used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vaekit.errors import ConfigError

#: Environment variable through which ``vaekit tune`` hands a trial's run its study and trial.
ENV_TRIAL = "VAEKIT_TRIAL"
#: Environment variable through which ``vaekit tune`` and ``sweep`` hand a run the pid it must not outlive.
ENV_PARENT = "VAEKIT_PARENT_PID"
#: How often (seconds) a run started by tune or sweep looks whether that process still lives.
PARENT_POLL = 0.5
PRUNERS = ("median", "halving", "hyperband", "none")
#: Trials that must complete before the median pruner stops any (``vaekit tune --pruner-startup``).
PRUNER_STARTUP = 5
PRUNED_TAG = "vaekit.pruned"
PRUNED_EPOCH_TAG = "vaekit.pruned_epoch"


def is_url(spec: str) -> bool:
    """An RDB URL (``postgresql://…``, ``sqlite:///…``) rather than a journal file path."""
    return "://" in spec


def shown_storage(spec: str) -> str:
    """``spec`` with any password in a URL replaced by ``***`` (it is printed and logged)."""
    if not is_url(spec):
        return spec
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(spec)
    if parts.password is None:
        return spec
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


#: Tables every Optuna RDB storage has (``optuna/storages/_rdb/models.py``).
OPTUNA_TABLES = ("studies", "version_info")


def check_storage(spec: str, tracking_uri: str) -> None:
    """Refuse a ``--storage`` that would damage a file, reading only (call before anything is written).

    Refused: the tracking store itself (Optuna would add its tables to it), an sqlite database with tables but
    not Optuna's, and an existing journal path whose first line is not a journal record (Optuna would append
    to it, then fail).  A missing or empty file is a new storage.
    """
    from vaekit import tracking

    shown = shown_storage(spec)
    store = tracking.sqlite_path(tracking_uri)
    if is_url(spec):
        db = tracking.sqlite_path(spec) if spec.startswith("sqlite:///") else None
        if spec == tracking_uri or (db is not None and store is not None and db.resolve() == store.resolve()):
            raise ConfigError(f"--storage {shown}: is the tracking store; Optuna would add its tables to it: name "
                              "another file (the default is optuna.journal beside the store)")
        if db is not None:
            tables = tracking.sqlite_tables(db, f"--storage {shown}")
            if tables and not set(OPTUNA_TABLES) <= set(tables):
                raise ConfigError(f"--storage {shown}: {db} is an sqlite database without Optuna's tables (it has: "
                                  f"{tracking.shown_tables(tables)}); name a new file or an Optuna storage")
        return
    path = Path(spec)
    if store is not None and path.exists() and path.resolve() == store.resolve():
        raise ConfigError(f"--storage {spec}: is the tracking store, not an Optuna journal: name another file "
                          "(the default is optuna.journal beside the store)")
    if path.is_file() and path.stat().st_size > 0 and not _journal_record(path):
        raise ConfigError(f"--storage {spec}: not an Optuna journal (its first line is no journal record); name a "
                          "new file or an existing journal")


def _journal_record(path: Path) -> bool:
    """Whether ``path`` starts with a line that is an Optuna journal record (a JSON object with ``op_code``)."""
    with open(path, "rb") as fh:
        line = fh.readline(1 << 20)
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "op_code" in record


def open_storage(spec: str):
    """The Optuna storage ``spec`` names: an RDB URL, else a journal file (created if missing).

    Raises :class:`ConfigError` naming ``--storage`` when it cannot be opened.
    """
    import optuna

    if is_url(spec):
        try:
            return optuna.storages.RDBStorage(spec)
        except Exception as exc:  # a missing driver (psycopg), a refused connection, a bad URL
            text = " ".join(str(exc).split())[:300]
            hint = ("; pip install \"vaekit[postgres]\" for its driver"
                    if isinstance(exc, ImportError) and spec.split("://")[0] in ("postgresql", "postgresql+psycopg") else "")
            raise ConfigError(f"--storage {shown_storage(spec)}: cannot open it ({type(exc).__name__}: {text}){hint}") from None
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec)
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {spec}: directory {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--storage {spec}: is a directory; name a journal file (e.g. {path / 'optuna.journal'})")
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        raise ConfigError(f"--storage {spec}: cannot open it ({exc.strerror or exc})") from None


def follow_parent() -> None:
    """In a run started by ``vaekit tune`` or ``sweep`` (:data:`ENV_PARENT` set): stop with SIGTERM when that process
    is gone, so a trial never outlives its study's process (a SIGKILL of tune, the OOM killer).

    SIGTERM ends the run as any stop does (KILLED, its last epoch checkpointed); a rerun of the study then
    queues the trial again (:func:`vaekit.commands.tune.reap_stale`).  A thread compares the parent pid every
    :data:`PARENT_POLL` seconds, so it works wherever ``os.getppid`` does; a parent already gone when the
    run starts stops it at once.
    """
    import signal
    import threading
    import time

    raw = os.environ.pop(ENV_PARENT, "")  # not handed on to anything this process starts
    if not raw.isdigit():
        return
    parent = int(raw)

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="vaekit-parent-watch", daemon=True).start()


def make_pruner(name: str, startup: int = PRUNER_STARTUP):
    """The Optuna pruner called ``name`` (see :data:`PRUNERS`).

    - ``median``: a trial stops when its value at an epoch is worse than the median of the completed
      trials' values at that epoch, once ``startup`` trials have completed;
    - ``halving``: asynchronous successive halving: at epochs 2, 4, 10, 28, … (1·3^k + 1) a trial goes on only
      if it is in the best third of all trials that reached that epoch;
    - ``hyperband``: Optuna's Hyperband (brackets of successive halving, min resource 1 epoch);
    - ``none``: every trial trains to the end.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: choose one of {', '.join(PRUNERS)}")


def epoch_metric(metric: str, validation_split: float) -> str:
    """The per-epoch metric a trial reports for the objective ``metric`` (``test_mse`` → ``val_mse``;
    the training ``mse`` when no validation set is held out)."""
    term = metric[len("test_"):] if metric.startswith("test_") else metric
    return f"val_{term}" if validation_split > 0 else term


def trial_env(storage: str, study: str, trial_id: int, pruner: str, startup: int, metric: str) -> dict[str, str]:
    """The environment entry that makes a ``vaekit run`` report to (and be pruned by) a trial."""
    return {ENV_TRIAL: json.dumps({"storage": storage, "study": study, "trial_id": trial_id, "pruner": pruner,
                                   "startup": startup, "metric": metric})}


def callbacks() -> list:
    """The Keras callbacks a run started by ``vaekit tune`` needs (the pruning callback), else ``[]``."""
    raw = os.environ.get(ENV_TRIAL)
    if not raw:
        return []
    spec = json.loads(raw)
    return [_pruning_callback(spec)]


def _pruning_callback(spec: dict):
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=spec["study"], storage=open_storage(spec["storage"]),
                              sampler=optuna.samplers.RandomSampler(),
                              pruner=make_pruner(spec["pruner"], spec.get("startup", PRUNER_STARTUP)))
    trial = optuna.trial.Trial(study, spec["trial_id"])
    key = spec["metric"]

    class PruningCallback(keras.callbacks.Callback):
        """After each epoch: report ``key`` to the trial; stop training if the pruner says so."""

        def on_epoch_end(self, epoch, logs=None):
            import math

            import mlflow

            value = (logs or {}).get(key)
            if value is None:
                raise ConfigError(f"--metric: the run logs no per-epoch {key!r} to prune on "
                                  f"(it logs: {', '.join(sorted(logs or {}))})")
            value = float(value)
            if not math.isfinite(value):
                return  # the NaN check in EpochLogger fails the run; nothing to report
            trial.report(value, epoch)
            # After the last epoch there is nothing left to save: the trial completes, and counts as one.
            last = epoch + 1 >= (self.params or {}).get("epochs", math.inf)
            if not last and trial.should_prune():
                mlflow.set_tags({PRUNED_TAG: "true", PRUNED_EPOCH_TAG: str(epoch + 1)})
                self.model.stop_training = True

    return PruningCallback()
