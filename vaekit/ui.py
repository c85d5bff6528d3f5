"""``vaekit ui``: the MLflow UI on a local store, with artifacts served so WAVs play and PNGs show.

A store is named the way ``vaekit run --tracking-uri`` takes it and the way
:func:`vaekit.tracking.ui_command` prints it: nothing (``./mlflow.db``), a directory holding
``mlflow.db``, a ``.db`` file, or a database URI.  Artifacts recorded as ``mlflow-artifacts:``
URIs (as in ``mlruns.example``) are served from the store's ``artifacts/`` folder, found
relative to the store at start-up, so a store folder can be moved or cloned anywhere.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vaekit.errors import VaekitError

#: Where served (``mlflow-artifacts:``) artifacts live, relative to the folder of ``mlflow.db``.
ARTIFACTS_DIR = "artifacts"


@dataclass
class Store:
    backend_uri: str
    artifacts_destination: str | None


def resolve_store(store: str | None = None) -> Store:
    """The backend URI and the served-artifacts folder for ``store`` (see the module docstring)."""
    from vaekit import tracking

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
    served = db.parent / ARTIFACTS_DIR
    # Stores written by a plain `vaekit run` keep artifacts in ./mlruns with absolute paths; new
    # experiments created from the UI then land beside them.
    destination = served if served.is_dir() else db.parent / "mlruns"
    return Store(f"sqlite:///{db}", str(destination))


def server_command(store: Store, port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow server`` command line for ``store`` (one worker: a local UI needs no more)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.backend_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    if store.artifacts_destination:
        cmd += ["--serve-artifacts", "--artifacts-destination", store.artifacts_destination]
    return cmd


def runs_table_url(store: Store, port: int, host: str = "127.0.0.1") -> str:
    """The runs table of the experiment with vaekit runs (MLflow 3 opens in its GenAI view otherwise)."""
    from mlflow import MlflowClient

    exp_id = "0"
    try:
        exps = MlflowClient(store.backend_uri).search_experiments()
        named = [e for e in exps if e.name == "vaekit"]
        others = sorted((e for e in exps if e.experiment_id != "0"), key=lambda e: -(e.last_update_time or 0))
        exp_id = (named or others or exps)[0].experiment_id if exps else "0"
    except Exception:  # the server reports store problems itself, with more detail
        pass
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"


def serve(store: str | None = None, port: int = 5000, host: str = "127.0.0.1") -> None:
    """Print the runs-table URL, then become ``mlflow server`` (Ctrl-C stops it)."""
    resolved = resolve_store(store)
    if not 0 < port < 65536:
        raise VaekitError(f"--port {port}: must be between 1 and 65535")
    print(f"MLflow UI for {resolved.backend_uri}", flush=True)
    print(f"runs table: {runs_table_url(resolved, port, host)}", flush=True)
    if host != "127.0.0.1":
        print(f"warning: --host {host} makes the store reachable from other machines", file=sys.stderr, flush=True)
    cmd = server_command(resolved, port, host)
    # exec: signals (Ctrl-C, kill) reach the server directly and no wrapper process is left behind.
    os.execv(cmd[0], cmd)
