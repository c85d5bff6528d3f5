"""``vaekit tune`` under hostile flags and stops (issue 22): a ``--storage`` that is not a study's is refused before
anything is written; ``--jobs`` and grid sizes are bounded; Ctrl-C just after a trial starts, and SIGKILL of the
tune process, leave no trial counted that did not run and no orphan process.  Real processes, a real Optuna
journal and a real MLflow sqlite store."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import error_line

SPACE = '"loss.lambda" = {low = 100, high = 1000, log = true}\n'


def tune_cli(*args):
    from vaekit.cli import main

    return CliRunner().invoke(main, ["tune", *map(str, args)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_storage_that_is_not_a_study_s_is_refused_before_anything_is_written(store, tmp_path):
    """``--storage sqlite:///…/mlflow.db`` (the tracking store) got Optuna's 12 tables before the refusal; a file
    that is not a journal got a JSON line appended, then a traceback."""
    from vaekit import tracking

    (tmp_path / "space.toml").write_text(SPACE)
    tracking.check_store(store, "vaekit")  # the tracking store exists, with MLflow's tables
    db = tracking.sqlite_path(store)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    inventory = tmp_path / "inventory.db"
    with sqlite3.connect(inventory) as con:
        con.execute("CREATE TABLE parts (name TEXT)")
    before = {p: digest(p) for p in (db, notes, inventory)}
    listing = sorted(tmp_path.iterdir())
    for storage, message in (
            (store, f"--storage {store}: is the tracking store; Optuna would add its tables to it: name another file "
                    "(the default is optuna.journal beside the store)"),
            (db, f"--storage {db}: is the tracking store, not an Optuna journal: name another file (the default is "
                 "optuna.journal beside the store)"),
            (notes, f"--storage {notes}: not an Optuna journal (its first line is no journal record); name a new file "
                    "or an existing journal"),
            (f"sqlite:///{inventory}", f"--storage sqlite:///{inventory}: {inventory} is an sqlite database without "
                                       "Optuna's tables (it has: parts); name a new file or an Optuna storage")):
        line = error_line(tune_cli("--space", tmp_path / "space.toml", "--trials", 1, "--tracking-uri", store,
                                   "--storage", storage))
        assert line == f"Error: {message}"
    assert {p: digest(p) for p in before} == before  # not a byte written
    assert sorted(tmp_path.iterdir()) == listing  # and no journal or lock file made


def test_jobs_and_grid_sizes_are_bounded_before_anything_starts(store, tmp_path):
    """``--jobs 1000000000`` started threads until it failed with a traceback; a grid of two integer ranges of
    10,000 values each made Optuna list its 10⁸ points (over 3 GB)."""
    (tmp_path / "space.toml").write_text(SPACE)
    (tmp_path / "grid.toml").write_text("batch_size = {low = 1, high = 10000}\nlatent_dim = {low = 1, high = 10000}\n")
    listing = sorted(tmp_path.iterdir())
    line = error_line(tune_cli("--space", tmp_path / "space.toml", "--trials", 1, "--tracking-uri", store,
                               "--jobs", 1000000000))
    assert line == "Error: --jobs 1000000000: must be from 1 to 256 (each job is a training process of its own)"
    line = error_line(tune_cli("--space", tmp_path / "grid.toml", "--trials", 1, "--tracking-uri", store,
                               "--sampler", "grid"))
    assert line == (f"Error: --space {tmp_path / 'grid.toml'}: the grid has 100000000 points (10000 × 10000); --sampler "
                    "grid takes at most 10000: give fewer values, or use --sampler tpe or random")
    assert sorted(tmp_path.iterdir()) == listing  # no store, no study


# -- stops: Ctrl-C just after a trial starts, SIGKILL of tune ---------------------------------------------

def start(*args, cwd):
    """``vaekit tune ARGS`` as a process that takes Ctrl-C even when pytest runs as a background job, its output
    unbuffered (a test reads it line by line)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "vaekit", "tune", *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_just_after_a_trial_starts_queues_it_again_and_counts_nothing(notebook_data, store, tmp_path):
    """SIGINT while the trial's process was still starting recorded the trial FAIL ("failed before its run
    started"), counted it towards --trials and never ran its settings."""
    from test_tune import TINY, load_study, study_runs

    from vaekit.launcher import counted

    (tmp_path / "space.toml").write_text(SPACE)
    proc = start("--space", "space.toml", "--trials", 1, "--data", notebook_data, "--tracking-uri", store,
                 "--epochs", 1, *TINY, cwd=tmp_path)
    try:
        lines = []
        while not any(line.startswith("[0] start") for line in lines):
            line = proc.stdout.readline()
            assert line, f"tune ended before its trial started: {proc.stderr.read()[-3000:]}"
            lines.append(line)
        proc.send_signal(signal.SIGINT)  # the trial's process is still importing: it has no run yet
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130 and "Interrupted." in err and "Traceback" not in err, err[-3000:]
    study = load_study(tmp_path / "optuna.journal")
    stopped, queued = study.trials
    assert (stopped.state.name, stopped.user_attrs["vaekit.interrupted"]) == ("FAIL", True)
    assert "stopped before its run started" in stopped.user_attrs["vaekit.error"]
    assert (queued.state.name, queued.user_attrs["vaekit.retry_of"]) == ("WAITING", 0)  # its settings, queued again
    assert sum(counted(t) for t in study.trials) == 0  # --trials 1 still has its trial to run
    _, [parent], children = study_runs(store)
    assert parent.info.status == "KILLED" and children == []  # no FAILED run for a trial that never ran


def test_a_killed_tune_takes_its_trial_with_it_and_a_rerun_reaps_and_requeues_it(notebook_data, store, tmp_path):
    """SIGKILL of ``vaekit tune`` left its trial's ``vaekit run`` running as an orphan that finished its run while
    Optuna had the trial RUNNING for ever; ``reap_stale`` had no test.  The trial now stops with its tune process
    (its run KILLED, as for any stop), and a rerun marks the trial FAIL, queues its settings and runs them."""
    from mlflow.tracking import MlflowClient
    from test_tune import TINY, load_study

    from reliability_helpers import FAULTS, first_epoch_logged, wait_for
    from vaekit import tracking

    (tmp_path / "space.toml").write_text(SPACE)
    base = ["--space", "space.toml", "--trials", 1, "--data", notebook_data, "--tracking-uri", store, "--epochs", 2,
            *TINY, "--plugin", FAULTS, "--loss", "slow-mse-kl"]
    proc = start(*base, "--option", "loss.seconds=8", cwd=tmp_path)  # the second epoch's batches nap 8 s each
    try:
        run_id = wait_for(first_epoch_logged(store), timeout=300, proc=proc, what="the trial's first epoch")
        trial_pid = int(MlflowClient(store).get_run(run_id).data.tags["vaekit.pid"])
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    wait_for(lambda: tracking.process_start(trial_pid) is None, timeout=120, what="the trial's process to stop")
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "KILLED", run.info.status  # stopped as by SIGTERM: not left to finish on its own
    assert load_study(tmp_path / "optuna.journal").trials[0].state.name == "RUNNING"  # nobody could tell Optuna

    again = start(*base, "--option", "loss.seconds=0", "--epochs", 1, cwd=tmp_path)  # --epochs may change on a rerun
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    assert f"trial 0: its process ({proc.pid}) is gone; marked FAIL and queued again" in out
    reaped, rerun = load_study(tmp_path / "optuna.journal").trials
    assert (reaped.state.name, reaped.user_attrs["vaekit.interrupted"]) == ("FAIL", True)
    assert (rerun.state.name, rerun.params, rerun.user_attrs["vaekit.retry_of"]) == ("COMPLETE", reaped.params, 0)
