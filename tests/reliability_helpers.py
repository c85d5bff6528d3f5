"""Helpers shared by test_reliability.py and test_resume.py: a small VAE, real subprocesses, store polling."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import HANG, restore_sigint, tiny_config

FAULTS = Path(__file__).with_name("fault_plugins.py")
#: A small dense VAE: the faults under test do not need the notebook's 5M-parameter conv net.
SMALL = dict(encoder="dense", decoder="dense", latent_dim=4,
             options={"encoder": {"units": 64}, "decoder": {"units": 64}, "vocoder": {"n_iter": 4}})
SMALL_ARGS = ["--encoder", "dense", "--decoder", "dense", "--latent-dim", "4", "--batch-size", "32",
              "--samples", "1", "--option", "encoder.units=64", "--option", "decoder.units=64",
              "--option", "vocoder.n_iter=4", "--quiet"]


def small_config(data, store, **kw):
    settings = {**SMALL, **kw}
    settings["options"] = {**SMALL["options"], **kw.get("options", {})}
    return tiny_config(data, store, **settings)


def load_faults():
    """Load tests/fault_plugins.py as a plugin file; the module."""
    from vaekit.plugins import load_plugin_file

    return load_plugin_file(FAULTS)


def only_run(store):
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def wait_for(predicate, timeout=600.0, proc=None, what="condition"):
    """Poll ``predicate`` until it returns something truthy; fail early if ``proc`` exits first.

    ``timeout`` only guards against a hang, so it is generous: on a loaded 2-core machine a JAX run's start-up
    and first epoch have taken over 120 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def query_store(store, sql):
    """The rows ``sql`` gives on a ``sqlite:///`` store, read-only; None while the file or its tables are missing.

    Read-only on purpose: an MlflowClient would run MLflow's schema migration on a store a child
    process is still creating, and race it (the race vaekit's store lock exists for).
    """
    import sqlite3

    db = Path(store[len("sqlite:///"):])
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no tables yet
        return None


def first_epoch_logged(store):
    """A check for :func:`wait_for`: the id of a run whose epoch-0 metrics are in the store, else None."""

    def check():
        rows = query_store(store, "SELECT run_uuid FROM metrics WHERE key = 'loss' LIMIT 1")
        return rows[0][0] if rows else None

    return check


def start_cli(*args, cwd):
    """``python -m vaekit ARGS`` started in the background; it takes Ctrl-C whatever pytest's parent ignores."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.Popen([sys.executable, "-m", "vaekit", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)


def slow_run_args(data, store, epochs):
    """A run whose second and later epochs take ≥1 s a batch: a signal surely lands mid-training."""
    return ["run", "--data", data, "--tracking-uri", store, "--epochs", epochs, *SMALL_ARGS,
            "--plugin", FAULTS, "--loss", "slow-mse-kl", "--option", "loss.seconds=1"]


def signal_mid_training(data, store, cwd, signum, epochs=3):
    """Start a slow ``vaekit run``, send ``signum`` once its first epoch is logged; (run id, exit code, stderr)."""
    proc = start_cli(*slow_run_args(data, store, epochs), cwd=cwd)
    try:
        run_id = wait_for(first_epoch_logged(store), proc=proc, what="the first epoch's metrics")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=HANG)
    finally:
        proc.kill() if proc.poll() is None else None
    return run_id, proc.returncode, err
