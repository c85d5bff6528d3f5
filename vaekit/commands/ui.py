"""``vaekit ui``: the MLflow UI on a local store, with artifacts served so WAVs play and PNGs show.

A store is named the way ``vaekit run --tracking-uri`` takes it and the way
:func:`vaekit.tracking.ui_command` prints it: nothing (``./mlflow.db``), a directory holding
``mlflow.db``, a ``.db`` file, or a database URI.  The store's ``artifacts/`` folder beside the
database holds what vaekit runs logged (``file://`` locations, followed when the folder was moved:
:func:`vaekit.tracking.follow_moved_store`) and what goes through the server (``mlflow-artifacts:``
URIs, as in ``mlruns.example``, resolved relative to the store at start-up), so a store folder can
be moved or cloned anywhere.

The server runs without MLflow's job execution (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: its
consumers are processes vaekit never uses), and stops within seconds of SIGTERM or Ctrl-C.

It serves MLflow's own app through :func:`mlflow_app` (``mlflow server --app-name vaekit``, an ``mlflow.app``
entry point), whose page starts in MLflow's model-training layout in a browser that has not chosen one.  MLflow
3.17's UI decides between its GenAI and model-training layouts by its own switch, kept in the browser (the
``mlflow.experimentKind`` tag vaekit gives its experiments is not read while that switch exists), and starts
in GenAI: a vaekit run's page opened from a link showed GenAI's traces and judges.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vaekit import tracking
from vaekit.errors import VaekitError
from vaekit.tracking import ARTIFACTS_DIR


@dataclass
class Store:
    backend_uri: str
    artifacts_destination: str | None


def resolve_store(store: str | None = None) -> Store:
    """The backend URI and the served-artifacts folder for ``store`` (see the module docstring)."""
    if store and "://" in store and not store.startswith("sqlite:"):
        if store.startswith(("http://", "https://")):
            raise VaekitError(f"{store} is already a tracking server: open it in a browser")
        return Store(store, None)
    if store is None:
        db = Path.cwd() / "mlflow.db"
        if not db.exists():
            raise VaekitError(f"no mlflow.db in {Path.cwd()}: run `vaekit run` here first, or name a store: vaekit ui STORE")
    elif store.startswith("sqlite:"):
        db = tracking.sqlite_path(store)
        if db is None or not db.exists():
            raise VaekitError(f"{store}: no such sqlite database")
    else:
        path = Path(store).expanduser()
        if not path.exists():
            raise VaekitError(f"{store}: no such store (expected a directory holding mlflow.db, a .db file or a URI)")
        db = path / "mlflow.db" if path.is_dir() else path
        if not db.is_file():
            raise VaekitError(f"{store}: no mlflow.db in this directory")
    db = db.resolve()
    tracking.check_sqlite_schema(f"sqlite:///{db}")
    tracking.follow_moved_store(f"sqlite:///{db}")  # a store folder moved whole still shows its artifacts
    served = db.parent / ARTIFACTS_DIR
    # Stores written by an older vaekit (or plain MLflow) keep artifacts in ./mlruns of where the run
    # was started, by absolute path; experiments created from the UI then land in the store's mlruns/.
    destination = served if served.is_dir() else db.parent / "mlruns"
    return Store(f"sqlite:///{db}", str(destination))


#: The environment ``mlflow server`` runs in: no job execution (MLflow 3 would otherwise start a job
#: runner and seven huey consumer processes for features vaekit never uses; on SIGTERM some of them
#: outlived the server).
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
#: Seconds uvicorn lets open requests (a browser's keep-alive connections) finish when asked to stop.
GRACEFUL_STOP_S = 1


def server_command(store: Store, port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow server`` command line for ``store`` (one worker: a local UI needs no more); run it
    with :data:`SERVER_ENV` in the environment.  With ``--app-name vaekit`` (:func:`mlflow_app`) where
    vaekit's entry point is installed."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.backend_uri,
           "--host", host, "--port", str(port), "--workers", "1",
           "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_STOP_S}"]
    if _app_installed():
        cmd += ["--app-name", APP_NAME]
    if store.artifacts_destination:
        cmd += ["--serve-artifacts", "--artifacts-destination", store.artifacts_destination]
    return cmd


#: vaekit's ``mlflow.app`` entry point (pyproject.toml): MLflow's app, starting in the model-training layout.
APP_NAME = "vaekit"
#: Where MLflow 3.17's page keeps its GenAI / model-training switch (``localStorage``, JSON), and vaekit's default.
WORKFLOW_KEY, WORKFLOW_DEFAULT = "mlflow.workflowType_v1", "machine_learning"
#: Put into the page's ``<head>``: the switch's default in a browser that has none (a choice made is kept).
WORKFLOW_SCRIPT = (f"<script>try{{var k={json.dumps(WORKFLOW_KEY)};if(!localStorage.getItem(k))"
                   f"localStorage.setItem(k,{json.dumps(json.dumps(WORKFLOW_DEFAULT))})}}catch(e){{}}</script>")


def _app_installed() -> bool:
    from importlib.metadata import entry_points

    return any(e.name == APP_NAME for e in entry_points(group="mlflow.app"))


def mlflow_app():
    """The app ``mlflow server --app-name vaekit`` serves: MLflow's own (``mlflow.server.fastapi_app``), its page
    with :data:`WORKFLOW_SCRIPT` in the ``<head>`` (see the module's docstring)."""
    from mlflow.server.fastapi_app import app

    return with_workflow_default(app)


def with_workflow_default(app):
    """The ASGI ``app``, with :data:`WORKFLOW_SCRIPT` put into the ``<head>`` of every HTML page it answers a GET with."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await app(scope, receive, send)
        held: dict = {}  # the start of an HTML answer, and its body so far: sent once whole

        async def sending(message):
            if message["type"] == "http.response.start":
                kind = next((v for k, v in message["headers"] if k.lower() == b"content-type"), b"")
                if kind.startswith(b"text/html"):
                    held.update(start=message, body=[])
                    return
            elif "start" in held:
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                page = b"".join(held["body"]).replace(b"<head>", b"<head>" + WORKFLOW_SCRIPT.encode(), 1)
                headers = [(k, v) for k, v in held["start"]["headers"] if k.lower() != b"content-length"]
                await send({**held["start"], "headers": [*headers, (b"content-length", str(len(page)).encode())]})
                message = {"type": "http.response.body", "body": page}
            await send(message)

        await app(scope, receive, sending)

    return wrapped


def runs_table_url(store: Store, port: int, host: str = "127.0.0.1") -> str:
    """The runs table of the experiment with vaekit runs (MLflow 3 opens in its GenAI view otherwise)."""
    exp_id = "0"
    try:
        exps = _experiments(store.backend_uri)
        live = [e for e in exps if e[3] != "deleted"]
        named = [e for e in live if e[1] == "vaekit"]
        others = sorted((e for e in live if e[0] != "0"), key=lambda e: -(e[2] or 0))
        exp_id = (named or others or live)[0][0] if live else "0"
    except Exception:  # the server reports store problems itself, with more detail
        pass
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"


def _experiments(backend_uri: str) -> list[tuple[str, str, int | None, str]]:
    """(id, name, last update time, lifecycle stage) of every experiment.  A sqlite store is read with
    sqlite3, so this process never imports MLflow: it stays small while it waits on the server, and
    exits at once when the server stops (an interpreter that imported MLflow takes seconds to end)."""
    db = tracking.sqlite_path(backend_uri)
    if db is not None:
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)) as con:
            rows = con.execute("SELECT experiment_id, name, last_update_time, lifecycle_stage FROM experiments")
            return [(str(r[0]), r[1], r[2], r[3]) for r in rows]
    from mlflow import MlflowClient

    return [(e.experiment_id, e.name, e.last_update_time, e.lifecycle_stage)
            for e in MlflowClient(backend_uri).search_experiments()]


#: Seconds from SIGTERM/Ctrl-C to a forced stop (uvicorn itself is gone in well under one; MLflow's
#: ``server`` command then spends seconds tearing its interpreter down, which nothing needs).
STOP_S = 1.5


def serve(store: str | None = None, port: int = 5000, host: str = "127.0.0.1") -> int:
    """Print the runs-table URL, then run ``mlflow server`` until it exits or this process gets SIGTERM,
    SIGHUP or Ctrl-C; return its exit status (0 after such a stop).

    The server runs in its own session, so a stop reaches it only through :func:`stop_server`,
    which asks it to stop and kills what is left after :data:`STOP_S`: the command ends within
    about that time and leaves no process behind.  Should this process itself be killed, the
    server is sent SIGTERM by the kernel (Linux's parent-death signal).
    """
    import signal
    import subprocess

    resolved = resolve_store(store)
    if not 0 < port < 65536:
        raise VaekitError(f"--port {port}: must be between 1 and 65535")
    print(f"MLflow UI for {resolved.backend_uri}", flush=True)
    print(f"runs table: {runs_table_url(resolved, port, host)}", flush=True)
    if host != "127.0.0.1":
        print(f"warning: --host {host} makes the store reachable from other machines", file=sys.stderr, flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        proc = subprocess.Popen(server_command(resolved, port, host), env={**os.environ, **SERVER_ENV},
                                start_new_session=True, preexec_fn=_die_with_parent)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            stop_server(proc)
            return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_server(proc, grace: float = STOP_S) -> None:
    """SIGTERM the server's process group; SIGKILL whatever is left of it after ``grace`` seconds."""
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader's slow teardown, or a worker that did not stop
    except ProcessLookupError:
        pass
    proc.wait()


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when vaekit ui dies, however it dies (Linux; nothing elsewhere)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
