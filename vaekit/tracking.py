"""The MLflow side of a run: where the store is, checks before training, and the run's lifecycle.

:func:`tracked_run` is the one place a run starts and ends.  It ends the run

- ``FINISHED`` when the body returns (so only after every artifact is written),
- ``KILLED`` on Ctrl-C (SIGINT) or SIGTERM, keeping what was logged so far,
- ``FAILED`` on any other exception, with the message as the ``vaekit.error`` tag and the
  traceback as the artifact ``error/traceback.txt``.

No path that can be caught leaves a run ``RUNNING``.  A stop that cannot (SIGKILL, the OOM killer, a
power cut) can: :func:`owner_state` tells such a run by its owner tags, and :func:`close` ends it KILLED.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from vaekit.errors import ConfigError, VaekitError, one_line, write_failure


class RunTerminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM (a BaseException, like Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default (``sqlite:///mlflow.db`` in the cwd)."""
    if uri:
        if "://" not in uri and not uri.startswith(("sqlite:", "file:", "databricks")):
            # A plain path: a directory holds mlflow.db, a .db file is the database itself.
            p = Path(uri).expanduser().resolve()
            uri = f"sqlite:///{p / 'mlflow.db' if p.suffix != '.db' else p}"
        return uri
    import mlflow

    return mlflow.get_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: MLflow's own error records that came with a traceback, kept off the console (see :func:`quiet_mlflow_tracebacks`).
MLFLOW_TRACEBACKS: list[str] = []


def quiet_mlflow_tracebacks() -> None:
    """Keep MLflow's logged tracebacks (``logger.exception``: a full disk gives hundreds of lines) off the
    console, in :data:`MLFLOW_TRACEBACKS`; the error they come with still ends the command with one line,
    and the CLI saves them with its traceback file.  Other MLflow messages are untouched.
    """
    import logging

    import mlflow  # noqa: F401  (configures MLflow's console handler)

    class KeepTracebacks(logging.Filter):
        def filter(self, record):
            if not record.exc_info:
                return True
            if len(MLFLOW_TRACEBACKS) < 50:
                MLFLOW_TRACEBACKS.append(logging.Formatter().format(record))
            return False

    for handler in logging.getLogger("mlflow").handlers:
        if not any(type(f).__name__ == "KeepTracebacks" for f in handler.filters):  # once per handler
            handler.addFilter(KeepTracebacks())


def check_store(uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Make sure the store can be used before any training time is spent; return the experiment id.

    A sqlite store that does not exist yet is created under a file lock, because processes
    that create one at the same moment race in MLflow's schema migration.  An experiment this
    creates keeps its artifacts at ``artifact_location``, by default (sqlite stores) beside the
    database (see :func:`store_artifact_root`); an existing experiment keeps its own location.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    quiet_mlflow_tracebacks()
    _check_server(uri)
    db = sqlite_path(uri)
    lock = _check_sqlite_store(uri, db) if db is not None else contextlib.nullcontext
    exp_id = _experiment_id(uri, experiment, artifact_location, lock)
    check_artifact_location(MlflowClient(uri).get_experiment(exp_id).artifact_location, experiment)
    mlflow.set_tracking_uri(uri)
    return exp_id


def _check_server(uri: str) -> None:
    """A tracking server (``http(s)://``) must answer its health check."""
    if urlparse(uri).scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VaekitError(f"--tracking-uri {uri}: tracking server unreachable ({reason})") from None


def _check_sqlite_store(uri: str, db: Path):
    """A sqlite store's folder must exist and be writable (the database too, if it exists), its schema be
    MLflow's; return the factory of the file lock that creating it or its experiments is done under."""
    if not db.parent.is_dir():
        culprit = _first_non_dir(db.parent)
        what = f"{culprit} is a file, not a directory" if culprit.exists() else f"directory {culprit} does not exist"
        raise VaekitError(f"--tracking-uri {uri}: {what}")
    problem = _write_problem(db.parent) or (_write_problem(db, probe_file=True) if db.exists() else None)
    if problem:
        raise VaekitError(f"--tracking-uri {uri}: {problem}")
    check_sqlite_schema(uri)
    follow_moved_store(uri)
    lock_file = db.with_name(db.name + ".lock")
    return lambda: _file_lock(lock_file)  # a factory: each attempt of _experiment_id takes the lock afresh


def _experiment_id(uri: str, experiment: str, artifact_location: str | None, lock) -> str:
    """The id of ``experiment``, created if missing, under ``lock()``; a deleted one is an error."""
    from mlflow.tracking import MlflowClient

    for attempt in range(4):
        try:
            with lock():
                return _find_or_create_experiment(uri, experiment, artifact_location)
        except VaekitError:
            raise
        except Exception as exc:
            text = str(exc)
            if exc.__class__.__name__ == "MlflowException" and "already exists" in text:
                return MlflowClient(uri).get_experiment_by_name(experiment).experiment_id
            # A process outside vaekit's lock (a plain MLflow client, `mlflow ui`) creating the same
            # store at the same moment: its schema migration collides with ours. Wait and look again.
            if attempt == 3 or not ("already exists" in text or "database is locked" in text):
                raise VaekitError(f"tracking store {uri}: {type(exc).__name__}: {text.splitlines()[0]}") from None
            time.sleep(0.5 * 2**attempt)


def _find_or_create_experiment(uri: str, experiment: str, artifact_location: str | None) -> str:
    client = _experiment_store(uri, artifact_location)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise VaekitError(
            f"--experiment {experiment}: deleted in {uri}; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or choose another --experiment")
    return exp.experiment_id if exp else _create_experiment(client, experiment, artifact_location)


#: The experiment tag MLflow 3 names an experiment's kind by, and the kind of vaekit's (what the UI's "Machine
#: learning" kind writes).  MLflow 3.17's UI reads its own GenAI / model-training switch instead (vaekit.ui).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _create_experiment(client, name: str, artifact_location: str | None) -> str:
    """Create experiment ``name`` with ``client`` (an MlflowClient or MLflow's SQLAlchemy store), tagged a model-training
    experiment (:data:`EXPERIMENT_KIND`); return its id."""
    from mlflow.entities import ExperimentTag
    from mlflow.tracking import MlflowClient

    key, value = EXPERIMENT_KIND
    if isinstance(client, MlflowClient):
        return client.create_experiment(name, artifact_location, tags={key: value})
    return client.create_experiment(name, artifact_location, [ExperimentTag(key, value)])


#: Where a sqlite store's artifacts live, relative to the folder of its database: the folder
#: ``vaekit ui`` serves (``mlflow server --artifacts-destination``), so experiments created by
#: vaekit (``artifacts/<experiment id>``) and from the UI (``mlflow-artifacts:/<experiment id>``) share it.
ARTIFACTS_DIR = "artifacts"


def store_artifact_root(uri: str) -> str | None:
    """The artifact root of experiments vaekit creates in the store at ``uri``: ``DIR/artifacts`` beside
    a sqlite database ``DIR/*.db`` (an absolute path, the form MLflow records local locations in), so
    the store folder holds everything; None (MLflow's default) for other stores."""
    db = sqlite_path(uri)
    return str(db.resolve().parent / ARTIFACTS_DIR) if db is not None else None


#: Columns of an MLflow sqlite store that hold artifact locations (table, column).
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "source"),
                     ("model_versions", "storage_location"))


def follow_moved_store(uri: str) -> int:
    """After a store folder was moved or copied whole: point its locations at the folder it is in now.

    Experiments vaekit created record ``OLD/artifacts/<id>``; when ``OLD`` is not the database's
    folder and the database's own ``artifacts/<id>`` exists, every location under
    ``OLD/artifacts`` (plain or as ``file://``; experiments, runs, logged and registered models) is
    rewritten to this store's folder.  Returns the number of experiments moved; 0 and no write for
    a store that did not move, a URI that is not sqlite, or a database that cannot be written.
    """
    import sqlite3

    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return 0
    here = store_artifact_root(uri)
    moved = 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=20)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "experiments" not in tables:
                return 0
            for exp_id, location in con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall():
                location = url2pathname(urlparse(location).path) if (location or "").startswith("file:") else location
                if not (location or "").startswith("/") or not location.endswith(f"/{ARTIFACTS_DIR}/{exp_id}"):
                    continue
                old = location[:-len(f"/{exp_id}")]  # OLD/artifacts
                # A copy is pointed at its own folder too: deleting runs there must not delete the original's files.
                if old == here or not (Path(here) / str(exp_id)).exists():
                    continue
                with con:
                    for table, column in _LOCATION_COLUMNS:
                        if table not in tables:
                            continue
                        for before, after in ((old, here), (Path(old).as_uri(), Path(here).as_uri())):
                            con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                        f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                                        (after, len(before) + 1, before, _like_prefix(before + "/")))
                moved += 1
    except sqlite3.Error:
        return 0  # read-only media, a locked database: the locations stay as they were
    return moved


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with ``text``."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _experiment_store(uri: str, artifact_location: str | None = None):
    """A store to look experiments up in and create them with ``create_experiment(name, artifact_location)``:
    for sqlite without ``artifact_location``, MLflow's own SQLAlchemy store with :func:`store_artifact_root`
    as its root, so a new experiment lies at ``ROOT/<experiment id>`` (and a new database's ``Default``
    experiment beside it too, not in the working directory); else an :class:`MlflowClient`.

    The one place vaekit creates experiments: runs, sweeps and their children all go through :func:`check_store`.
    """
    from mlflow.tracking import MlflowClient

    root = store_artifact_root(uri)
    if artifact_location is None and root is not None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(uri, root)
    return MlflowClient(uri)


#: Tables that mark an MLflow sqlite store.  ``alembic_version`` is the first table MLflow creates
#: (first in ``sqlite_master`` of a new store), so a store another process is creating at this moment
#: already shows it; ``experiments`` is in every store MLflow has made.
MLFLOW_MARKER_TABLES = ("alembic_version", "experiments")


def check_sqlite_schema(uri: str) -> None:
    """Refuse a ``sqlite:///`` database that has tables but none of MLflow's, before MLflow opens it.

    MLflow would otherwise add its ~65 tables to someone's own database (a wrong path, a typo)
    without a word.  A missing or empty file is a new store and passes; so does any other URI.
    The database is opened read-only: nothing is written, not even a lock file.
    """
    db = sqlite_path(uri)
    tables = sqlite_tables(db, f"--tracking-uri {uri}") if db is not None else []
    if tables and not set(MLFLOW_MARKER_TABLES) & set(tables):
        raise VaekitError(f"--tracking-uri {uri}: {db} is an sqlite database without MLflow's tables (it has: "
                          f"{shown_tables(tables)}); not turning it into an MLflow store: name a new file or an MLflow store")


def sqlite_tables(db: Path, where: str) -> list[str]:
    """The tables of the sqlite database ``db`` (sqlite's own left out), read without writing anything (not even a
    lock file); ``[]`` for a missing or empty file.  :class:`VaekitError` starting with ``where`` if it is not sqlite."""
    import sqlite3

    if not db.is_file() or db.stat().st_size == 0:
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    except sqlite3.DatabaseError as exc:
        raise VaekitError(f"{where}: {db} cannot be read as an sqlite database ({exc})") from None
    return [t for t in tables if not t.startswith("sqlite_")]  # sqlite's own (sqlite_sequence, ...)


def shown_tables(tables: list[str]) -> str:
    return ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")


def check_artifact_location(artifact_uri: str, experiment: str = "") -> None:
    """A local artifact location must be writable: create it and write a probe file there.

    A real write, not ``os.access``: root passes every permission check but still cannot write
    below a regular file or on a read-only file system.  Remote locations (s3://, an MLflow
    server's proxied artifacts) are not probed; a failing upload later ends the run FAILED.
    """
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return
    path = Path(url2pathname(parsed.path) if parsed.scheme else artifact_uri)
    where = f"experiment {experiment!r} artifact location {artifact_uri}" if experiment else f"artifact location {artifact_uri}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaekitError(f"{where}: cannot create it ({exc.strerror or exc}: {_first_non_dir(path)})") from None
    problem = _write_problem(path)
    if problem:
        raise VaekitError(f"{where}: {problem}")


def _write_problem(path: Path, probe_file: bool = False) -> str | None:
    """Why ``path`` (a directory, or with ``probe_file`` an existing file) cannot be written, else None."""
    import tempfile

    try:
        if probe_file:
            with open(path, "r+b"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".vaekit-probe-"):
                pass
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror or exc})"
    return None


def _first_non_dir(path: Path) -> Path:
    """The outermost ancestor of ``path`` (or itself) that is not a directory: the culprit to name."""
    for p in [*reversed(path.parents), path]:
        if not p.is_dir():
            return p
    return path


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into :class:`RunTerminated` in the main thread, for the body only."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunTerminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str | None = None, tags: dict | None = None,
                run_id: str | None = None, system_metrics: bool = False):
    """Start (or, with ``run_id``, resume) an MLflow run and end it FINISHED, KILLED or FAILED.

    ``system_metrics``: MLflow samples CPU, memory (and GPU) use into ``system/*`` metrics while the
    run lasts (every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds, 10 by default); without it
    MLflow's own switch (``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``) decides.
    """
    import mlflow

    with _sigterm_raises():
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                               run_name=run_name, tags=tags, log_system_metrics=True if system_metrics else None)
        status, failure = "FAILED", None
        try:
            yield run
            status = "FINISHED"
        except (KeyboardInterrupt, RunTerminated):
            status = "KILLED"
            raise
        except BaseException as exc:
            failure = exc
            _record_failure(exc)
            raise
        finally:
            # Ending must not be skipped by a second signal (an impatient second Ctrl-C, a
            # supervisor's repeated SIGTERM): ignore both while we end the run.
            sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if _in_main_thread() else None
            signal.signal(signal.SIGTERM, signal.SIG_IGN) if _in_main_thread() else None
            try:
                mlflow.end_run(status)
                if failure is not None:
                    failure.vaekit_ended = (run.info.run_id, status)
            except Exception as end_error:
                # The store cannot be written (a full disk): the run stays RUNNING (MLflow has taken it
                # off this process's stack already).  Say so with the error that stopped the run, or as
                # the error when the body had finished.
                if failure is None:
                    raise
                failure.vaekit_unended = (run.info.run_id, write_failure(end_error) or one_line(end_error, 200))
            finally:
                signal.signal(signal.SIGINT, sigint) if sigint is not None else None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def all_or_nothing(path: str):
    """Artifacts the block logs under ``path`` of the active run are kept whole or not at all.

    A failure while writing them (a full disk truncates the file being copied) deletes ``path``
    where the artifact store allows, so no partial file is left looking complete.
    """
    try:
        yield
    except BaseException:
        import mlflow
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with contextlib.suppress(Exception):
            get_artifact_repository(mlflow.get_artifact_uri()).delete_artifacts(path)
        raise


def _record_failure(exc: BaseException) -> None:
    import mlflow

    message = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        mlflow.set_tag("vaekit.error", message[:5000])
    with contextlib.suppress(Exception), all_or_nothing("error/traceback.txt"):
        mlflow.log_text("".join(traceback.format_exception(exc)), "error/traceback.txt")


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as a string that is the same for as long as that process lives.

    Linux: ``"<boot id>:<ticks>"``, the boot's id (``/proc/sys/kernel/random/boot_id``) and field 22
    of ``/proc/PID/stat`` (clock ticks from boot to the process's start): exact, and independent of
    the wall clock, so a clock step never makes a live process look like another one.  Elsewhere
    ``"psutil:<create time>"`` where psutil is installed (it is not a dependency).  None when the
    process does not exist, is a zombie (killed, not yet reaped: it runs nothing), or cannot be read.
    """
    if not Path("/proc/self/stat").exists():  # not Linux (or no /proc): psutil, where installed
        try:
            import psutil
        except ImportError:
            return None
        try:
            proc = psutil.Process(int(pid))
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return f"psutil:{proc.create_time():.3f}"
        except (psutil.Error, ValueError):
            return None
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")": split after the last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # field 3, the state: a zombie has no start worth telling apart
        return None
    return f"{boot_id}:{fields[19]}"  # field 22 is the 20th after the name


def owner_tags() -> dict[str, str]:
    """Tags naming the process that runs a run, so a run left RUNNING by a crash can be told apart.

    ``vaekit.pid_start`` (:func:`process_start`) tells this process from a later one given the same
    pid; it is left out where the start time cannot be read.
    """
    import os
    import socket

    tags = {"vaekit.host": socket.gethostname(), "vaekit.pid": str(os.getpid())}
    start = process_start(os.getpid())
    if start is not None:
        tags["vaekit.pid_start"] = start
    return tags


#: What :func:`owner_state` can say about a run's owning process.
GONE, ALIVE, NOT_RUNNING, OTHER_HOST, UNKNOWN = "gone", "alive", "not running", "other host", "unknown"


def owner_state(run) -> tuple[str, str]:
    """Whether the process that runs ``run`` still exists: (one of the states above, why, in words).

    ``GONE``: the run is RUNNING, was started on this host, and its pid is no process, a zombie, or a
    process that started at another time than the one tagged (the pid was reused).  A run from a
    vaekit without the ``vaekit.pid_start`` tag is judged by its pid alone: a live process with that
    pid counts as ``ALIVE`` (it may be another process; the reason says so).  ``UNKNOWN``: no usable
    host/pid tags (not a vaekit run, or a vaekit older than these tags).
    """
    import socket

    tags = run.data.tags
    host, pid, start = tags.get("vaekit.host"), tags.get("vaekit.pid", ""), tags.get("vaekit.pid_start")
    if run.info.status != "RUNNING":
        return NOT_RUNNING, f"the run is {run.info.status}, not RUNNING"
    if host is None or not pid.isdigit():
        return UNKNOWN, "the run has no vaekit.host/vaekit.pid tags, so whether its process lives cannot be told"
    if host != socket.gethostname():
        return OTHER_HOST, f"the run's process (pid {pid}) is on host {host}, not this one ({socket.gethostname()})"
    return _local_owner_state(pid, host, start)


def _local_owner_state(pid: str, host: str, start: str | None) -> tuple[str, str]:
    """:func:`owner_state` of a RUNNING run started on this host by process ``pid`` (tagged ``start``)."""
    if not _pid_taken(int(pid)):
        return GONE, f"its process (pid {pid} on {host}) no longer exists"
    if _zombie(int(pid)):
        return GONE, f"its process (pid {pid} on {host}) was killed (a zombie, not yet reaped)"
    now = process_start(int(pid))
    if start is None or now is None:
        return ALIVE, (f"process {pid} on {host} is alive (the run has no vaekit.pid_start tag, from an older "
                       "vaekit: it may be another process that got the same pid)" if start is None
                       else f"process {pid} on {host} is alive (its start time cannot be read)")
    if now.startswith("psutil:") != start.startswith("psutil:"):  # tagged one way, read another: cannot compare
        return ALIVE, f"process {pid} on {host} is alive (its start time was recorded in another form)"
    if now != start:
        return GONE, f"its process (pid {pid} on {host}) is gone; pid {pid} now belongs to a later process"
    return ALIVE, f"its process (pid {pid} on {host}) is still running"


def _pid_taken(pid: int) -> bool:
    """Whether a process holds ``pid``, one of another user's included."""
    import os

    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a number no pid can be
        return False
    except PermissionError:
        pass  # a process of another user holds the pid: alive, whose it is the start time tells
    return True


def _zombie(pid: int) -> bool:
    """Process ``pid`` was killed and waits to be reaped by its parent (Linux; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def crashed(run) -> bool:
    """A RUNNING run whose process, on this host, no longer exists (SIGKILL, OOM killer, power cut)."""
    return owner_state(run)[0] == GONE


def get_run(run_id: str, tracking_uri: str | None, what: str):
    """(client, run) for ``run_id`` in the store; :class:`ConfigError` naming ``what`` if there is no such run."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    check_sqlite_schema(uri)  # MlflowClient would add MLflow's tables to any other database
    if sqlite_path(uri) is not None and not sqlite_path(uri).is_file():
        raise ConfigError(f"{what}: no such run: {sqlite_path(uri)} does not exist (name the store with --tracking-uri)")
    follow_moved_store(uri)
    client = MlflowClient(uri)
    try:
        return client, client.get_run(run_id)
    except Exception as exc:
        raise ConfigError(f"{what}: no such run in {uri} ({str(exc).splitlines()[0]})") from None


def close(client, run, force: bool = False) -> str:
    """Mark a RUNNING run whose process is gone KILLED; return a line saying so.

    Refused (:class:`ConfigError`) when the run is not RUNNING, or its process is alive with the
    start time it was tagged with.  A run on another host, or without owner tags, or (older
    runs) a pid that is alive but may have been reused, is closed only with ``force``.
    """
    state, why = owner_state(run)
    run_id = run.info.run_id
    # A live pid whose start time was never tagged may be a reused one: only the user can tell.
    if state == GONE or (force and state in (OTHER_HOST, UNKNOWN)) or (
            force and state == ALIVE and "vaekit.pid_start" not in run.data.tags):
        client.set_tag(run_id, "vaekit.closed", f"marked KILLED by vaekit: {why}" + (" (--force)" if force else ""))
        client.set_terminated(run_id, "KILLED")
        return f"run {run_id}: marked KILLED ({why}{'; --force' if force and state != GONE else ''})"
    if state == NOT_RUNNING:
        raise ConfigError(f"run {run_id}: {why}; only a RUNNING run whose process is gone can be closed")
    if state == ALIVE:
        hint = ("; if it is not the run's, pass --force" if "vaekit.pid_start" not in run.data.tags
                else f"; stop it first (kill {run.data.tags['vaekit.pid']})")
        raise ConfigError(f"run {run_id}: not closed: {why}{hint}")
    raise ConfigError(f"run {run_id}: not closed: {why}; pass --force if you know it stopped")


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on the store at ``uri``."""
    db = sqlite_path(uri)
    if db is not None:
        if db.name == "mlflow.db" and db.parent == Path.cwd():
            return "vaekit ui"
        return f"vaekit ui {db.parent if db.name == 'mlflow.db' else db}"
    return f"open {uri}" if uri.startswith("http") else f"vaekit ui {uri}"
