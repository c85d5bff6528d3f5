"""Checkpoints and resume: a run stopped by SIGTERM (or failed) continues in the same MLflow run
from its last completed epoch and ends where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli
from reliability_helpers import (
    FAULTS,
    first_epoch_logged,
    load_faults,
    only_run,
    query_store,
    signal_mid_training,
    slow_run_args,
    small_config,
    start_cli,
    wait_for,
)
from vaekit.errors import ConfigError

#: A resumed run's test metrics equal an uninterrupted run's to this relative tolerance on CPU
#: (observed: identical; the tolerance only absorbs float summation order).
RESUME_RTOL = 1e-5
TEST_METRICS = ("test_loss", "test_mse", "test_kl")


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_sigterm_mid_training_then_resume_matches_an_uninterrupted_run(notebook_data, store, tmp_path):
    from vaekit.commands.run import run

    run_id, returncode, err = signal_mid_training(notebook_data, store, tmp_path, signal.SIGTERM)
    assert returncode == 143, err[-3000:]
    assert "Stopped: terminated by signal 15." in err and "Traceback" not in err
    client = MlflowClient(store)
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    kept = history(client, run_id, "loss")
    assert kept and kept[0][0] == 0 and len(kept) < 3  # the epochs done so far, not the whole run

    # Without the run's plugin file the resume refuses in one line naming it; --trust-run-plugins imports it.
    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"the run used plugin file {FAULTS}, not loaded" in res.stderr, res.stderr
    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet", "--trust-run-plugins", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"run id:    {run_id}" in res.stdout
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params == killed.data.params  # same run, same settings
    assert resumed.data.tags["vaekit.resumed_from_epoch"] == str(len(kept))
    assert "vaekit.error" not in resumed.data.tags
    assert len(client.search_runs([killed.info.experiment_id])) == 1

    # The same run without interruption (mse-kl computes what slow-mse-kl computes, without the naps).
    whole = run(small_config(notebook_data, store, epochs=3), progress=False)
    for key in ("loss", "val_loss", "kl"):
        got, want = history(client, run_id, key), history(client, whole.run_id, key)
        assert [s for s, _ in got] == [0, 1, 2], key  # every epoch exactly once, at its own step
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=RESUME_RTOL, err_msg=key)
    for key in TEST_METRICS:
        assert resumed.data.metrics[key] == pytest.approx(whole.metrics[key], rel=RESUME_RTOL), key


def artifact_dir(store, run_id) -> Path:
    rows = query_store(store, f"SELECT artifact_uri FROM runs WHERE run_uuid = '{run_id}'")
    return Path(urlparse(rows[0][0]).path)


def epochs_logged(store, n):
    """A check for :func:`wait_for`: the run id once a run has logged ``n`` epochs' loss, else None."""

    def check():
        rows = query_store(store, "SELECT run_uuid, COUNT(DISTINCT step) FROM metrics WHERE key = 'loss' GROUP BY run_uuid")
        return rows[0][0] if rows and rows[0][1] >= n else None

    return check


def test_sigkill_with_interval_0_keeps_every_logged_epoch_runs_close_ends_it_and_resume_logs_each_epoch_once(
        notebook_data, store, tmp_path):
    """``kill -9`` cannot be caught.  With --checkpoint-interval 0 an epoch's checkpoint is written
    before its metrics are logged, so the moment they appear the checkpoint is there (the write
    used to run in the background during the next epoch: a kill then found none).  ``vaekit runs
    close`` refuses the live run and marks the dead one KILLED.  Resumed from an older checkpoint
    than its last logged epoch (what a SIGKILL between interval writes leaves), the epoch trained
    again is not logged a second time."""
    from vaekit import tracking
    from vaekit.checkpoint import load

    # Wide layers: a ~60 MB checkpoint (conv2's size) whose write takes long enough to lose the race.
    args = [*slow_run_args(notebook_data, store, 3), "--checkpoint-interval", "0",
            "--option", "encoder.units=1024", "--option", "decoder.units=1024"]
    proc = start_cli(*args, cwd=tmp_path)
    try:
        run_id = wait_for(first_epoch_logged(store), proc=proc, what="the first epoch's metrics")
        meta = artifact_dir(store, run_id) / "checkpoints" / "slot0" / "state.json"
        # Read at once, while the process trains epoch 2: epoch 1's checkpoint must already be whole.
        assert meta.is_file(), "epoch 1's metrics are logged but its checkpoint is not written"
        saved = tmp_path / "epoch-1"
        shutil.copytree(meta.parent.parent, saved)
        assert load(run_id, store).epoch == 1
        assert tracking.get_run(run_id, store, "t")[1].data.tags["vaekit.pid_start"] == tracking.process_start(proc.pid)

        live = run_cli("runs", "close", run_id, "--tracking-uri", store, cwd=tmp_path)
        assert live.returncode == 2 and "Traceback" not in live.stderr
        assert f"run {run_id}: not closed: its process (pid {proc.pid} on " in live.stderr
        assert f"is still running; stop it first (kill {proc.pid})" in live.stderr

        wait_for(epochs_logged(store, 2), proc=proc, what="the second epoch's metrics")
        proc.kill()  # SIGKILL
        proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing could end it

    closed = run_cli("runs", "close", run_id, "--tracking-uri", store, cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr[-3000:]
    assert closed.stdout.strip() == f"run {run_id}: marked KILLED (its process (pid {proc.pid} on " \
        f"{socket.gethostname()}) no longer exists)"
    r = client.get_run(run_id)
    assert r.info.status == "KILLED" and r.info.end_time is not None
    assert "no longer exists" in r.data.tags["vaekit.closed"]
    again = run_cli("runs", "close", run_id, "--tracking-uri", store, cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip() == (f"Error: run {run_id}: the run is KILLED, not RUNNING; only a RUNNING run whose "
                                    "process is gone can be closed")

    # The checkpoint of epoch 1 while epochs 1 and 2 are logged: epoch 2 is trained again.
    shutil.rmtree(meta.parent.parent)
    shutil.copytree(saved, meta.parent.parent)
    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet", "--trust-run-plugins", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for key in ("loss", "kl", "val_loss"):
        assert [s for s, _ in history(client, run_id, key)] == [0, 1, 2], key  # each epoch once
    assert client.get_run(run_id).info.status == "FINISHED"
    assert f"run {run_id}: resuming from epoch 1 (checkpoint written 20" in res.stderr
    assert "; epoch 2 logged after it will be trained again (their first metrics are kept)" in res.stderr


def test_resume_closes_a_run_left_running_by_sigkill_and_says_why_it_has_no_checkpoint(
        notebook_data, store, tmp_path):
    """SIGKILL before the first checkpoint write (60 s by default): --resume marks the run KILLED
    (it is no longer stuck RUNNING) and says truthfully why there is nothing to resume from; while
    the process lives, --resume refuses the run."""
    from vaekit.checkpoint import resume_config

    proc = start_cli(*slow_run_args(notebook_data, store, 2), cwd=tmp_path)
    try:
        run_id = wait_for(first_epoch_logged(store), proc=proc, what="the first epoch's metrics")
        with pytest.raises(ConfigError, match="the run is RUNNING.*only KILLED or FAILED runs.*whose process died"):
            resume_config(run_id, store)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"

    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet", "--trust-run-plugins", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"run {run_id}: marked KILLED (its process (pid {proc.pid} on" in res.stderr
    assert (f"Error: --resume {run_id}: the run has no checkpoint (it logged 1 epoch(s) but stopped before its first "
            "checkpoint write, due 60 s into training (--checkpoint-interval 60)") in res.stderr
    assert client.get_run(run_id).info.status == "KILLED"


def test_a_dead_or_reused_pid_is_told_from_a_live_run_by_its_start_time(store, tmp_path):
    """Runs whose owner tags name: this (live) process; this pid with another start time (the pid
    reused); this pid without a start-time tag (an older vaekit: the pid alone decides); a zombie;
    another host.  Only the dead ones are closed without --force; a live one never is."""
    from vaekit import tracking

    client = MlflowClient(store)
    experiment = client.create_experiment("owners")
    me = tracking.owner_tags()
    host, pid = me["vaekit.host"], me["vaekit.pid"]
    zombie = subprocess.Popen(["sleep", "30"])
    zombie.send_signal(signal.SIGKILL)
    wait_for(lambda: tracking._zombie(zombie.pid), what="a zombie")
    cases = {
        "live": me,
        "reused": {**me, "vaekit.pid_start": me["vaekit.pid_start"].rsplit(":", 1)[0] + ":1"},
        "old": {"vaekit.host": host, "vaekit.pid": pid},
        "zombie": {"vaekit.host": host, "vaekit.pid": str(zombie.pid),
                   "vaekit.pid_start": me["vaekit.pid_start"]},
        "elsewhere": {**me, "vaekit.host": "another-host"},
    }
    try:
        runs = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in cases.items()}
        states = {name: tracking.owner_state(client.get_run(r))[0] for name, r in runs.items()}
    finally:
        zombie.wait()
    assert states == {"live": "alive", "reused": "gone", "old": "alive", "zombie": "gone", "elsewhere": "other host"}

    def close(name, *flags):
        return run_cli("runs", "close", runs[name], "--tracking-uri", store, *flags, cwd=tmp_path)

    res = close("reused")
    assert res.returncode == 0 and f"pid {pid} now belongs to a later process" in res.stdout, res.stderr
    res = close("live", "--force")
    assert res.returncode == 2 and f"is still running; stop it first (kill {pid})" in res.stderr
    res = close("old")
    assert res.returncode == 2 and "from an older vaekit: it may be another process" in res.stderr
    assert "if it is not the run's, pass --force" in res.stderr
    res = close("elsewhere")
    assert res.returncode == 2 and "is on host another-host, not this one" in res.stderr and "--force" in res.stderr
    assert close("elsewhere", "--force").returncode == 0
    res = run_cli("runs", "close", "0123abcd", "--tracking-uri", store, cwd=tmp_path)
    assert res.returncode == 2 and "Error: run 0123abcd: no such run in " in res.stderr and "Traceback" not in res.stderr
    assert {name: client.get_run(r).info.status for name, r in runs.items()} == {
        "live": "RUNNING", "reused": "KILLED", "old": "RUNNING", "zombie": "RUNNING", "elsewhere": "KILLED"}


def test_a_failed_run_resumes_after_its_last_epoch_and_finishes(notebook_data, store, tmp_path):
    """A transient failure after training (here in sample generation): resuming skips straight to it."""
    from vaekit.checkpoint import resume_config
    from vaekit.commands.run import run

    load_faults()
    config = small_config(notebook_data, store, epochs=2, vocoder="fails-once",
                          options={"vocoder": {"marker": str(tmp_path / "marker")}})
    with pytest.raises(Exception, match="transient vocoder failure"):
        run(config, progress=False)
    failed = only_run(store)
    assert failed.info.status == "FAILED" and "transient" in failed.data.tags["vaekit.error"]

    result = run(resume_config(failed.info.run_id, store), progress=False, resume=failed.info.run_id)
    client = MlflowClient(store)
    r = client.get_run(failed.info.run_id)
    assert result.run_id == failed.info.run_id and r.info.status == "FINISHED"
    assert r.data.tags["vaekit.resumed_from_epoch"] == "2" and "vaekit.error" not in r.data.tags
    assert [s for s, _ in history(client, r.info.run_id, "loss")] == [0, 1]
    assert all(np.isfinite(r.data.metrics[k]) for k in TEST_METRICS)
    assert {a.path for a in client.list_artifacts(r.info.run_id, "samples")} == {"samples/sample_00.wav",
                                                                                 "samples/sample_00.png"}


def test_resume_refuses_what_it_cannot_continue(notebook_data, store, tmp_path, monkeypatch):
    from vaekit import checkpoint
    from vaekit.checkpoint import resume_config
    from vaekit.commands.run import run

    # Checkpoints written after every epoch, and checkpoint.discard watched: the run below must have
    # had a checkpoint for "a finished run's checkpoints are gone" to mean anything.
    seen_by_discard = []

    def discard(artifact_uri):
        seen_by_discard.append(sorted(str(p.relative_to(folder)) for folder in [Path(urlparse(artifact_uri).path) / "checkpoints"]
                                      for p in folder.rglob("*") if p.is_file()))
        real_discard(artifact_uri)

    real_discard = checkpoint.discard
    monkeypatch.setattr(checkpoint, "discard", discard)
    done = run(small_config(notebook_data, store, samples=0, epochs=2, checkpoint_interval=0), progress=False)
    monkeypatch.undo()
    client = MlflowClient(store)
    with pytest.raises(ConfigError, match=f"--resume {done.run_id}: the run is FINISHED; only KILLED or FAILED"):
        resume_config(done.run_id, store)
    with pytest.raises(ConfigError, match="--resume 0123abcd: no such run"):
        resume_config("0123abcd", store)

    # A finished run's checkpoints are gone (only KILLED and FAILED runs are resumed) ...
    # There were two (one per epoch, in the two slots), and discard was called on them.
    assert seen_by_discard == [["slot0/state.json", "slot0/state.npz", "slot1/state.json", "slot1/state.npz"]]
    assert client.list_artifacts(done.run_id, "checkpoints") == []
    client.set_terminated(done.run_id, "KILLED")
    with pytest.raises(ConfigError, match="has no checkpoint"):
        run(resume_config(done.run_id, store), progress=False, resume=done.run_id)
    assert client.get_run(done.run_id).info.status == "KILLED"  # refusing left it as it was

    # ... and a checkpoint whose state file was changed is refused, not half-restored.
    load_faults()
    with pytest.raises(Exception, match="vocoder exploded"):
        run(small_config(notebook_data, store, vocoder="fails", options={"vocoder": {}}), progress=False)
    failed = client.search_runs([done.experiment_id], "attributes.status = 'FAILED'")[0]
    state = Path(urlparse(failed.info.artifact_uri).path) / "checkpoints" / "slot0" / "state.npz"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="checkpoints/slot0/state.npz does not match checkpoints/slot0/state.json"):
        run(resume_config(failed.info.run_id, store), progress=False, resume=failed.info.run_id)
    assert client.get_run(failed.info.run_id).info.status == "FAILED"

    # Settings cannot change on resume: one line, before anything is loaded.
    res = run_cli("run", "--resume", done.run_id, "--epochs", "5", "--tracking-uri", store, cwd=tmp_path)
    assert res.returncode == 2
    assert "Error: --resume continues a run with its own settings; drop --epochs" in res.stderr


def checkpoint_epoch(client, store, run_id):
    """The epoch of the run's checkpoint, None when it has none."""
    from vaekit.checkpoint import load

    if not client.list_artifacts(run_id, "checkpoints"):
        return None
    return load(run_id, store).epoch


def model_state(model):
    """The model's and its optimizer's variables, as arrays."""
    return [v.numpy() for v in model.variables] + [v.numpy() for v in model.optimizer.variables]


def assert_checkpoint(store, run_id, epoch, expected):
    """The run's checkpoint holds ``epoch`` and exactly the arrays ``expected``."""
    from vaekit.checkpoint import load

    saved = load(run_id, store)
    assert saved.epoch == epoch
    for got, want in zip(saved.model_arrays + saved.optimizer_arrays, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_checkpoints_are_written_every_interval_and_always_at_a_stop(store, monkeypatch):
    """The policy, on a real model and store: the last epoch is kept in memory; written when the
    interval has passed (0: every epoch) and, whatever the interval, when the run stops early."""
    import keras
    import mlflow

    from vaekit import checkpoint, tracking
    from vaekit.checkpoint import Checkpointer, load

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((4, 3), dtype="float32")
    client = MlflowClient(store)

    experiment = tracking.check_store(store, "checkpoints")
    with tracking.tracked_run(experiment) as every_epoch:
        ckpt = Checkpointer(model, interval=0)
        for epoch in (1, 2):
            model.fit(x, x[:, :2], verbose=0)
            ckpt.submit(epoch, {"loss": 0.5})
            ckpt.wait()
            assert checkpoint_epoch(client, store, every_epoch.info.run_id) == epoch
        # Epoch 4 trains and is taken while epoch 3 is still being written (the write made slow):
        # snapshot arrays are reused, but never the set a write in flight reads.
        written = {}

        def slow_write(arrays, epochs_done, *rest):
            time.sleep(1.0)
            written[epochs_done] = [a.copy() for a in arrays.values()]
            real_write(arrays, epochs_done, *rest)

        real_write = checkpoint.write
        monkeypatch.setattr(checkpoint, "write", slow_write)
        ckpt.interval = 1e-9  # any interval > 0 writes in the background (0 writes in line)
        expected = {}
        for epoch in (3, 4):
            model.fit(x, x[:, :2], verbose=0)
            ckpt.submit(epoch, {"loss": 0.5})
            expected[epoch] = model_state(model)
        ckpt.wait()
        assert len(ckpt._buffers) == 2  # a second set, taken while the first was being written
        for epoch in (3, 4):
            for got, want in zip(written[epoch], expected[epoch], strict=True):
                np.testing.assert_array_equal(got, want)
        assert_checkpoint(store, every_epoch.info.run_id, 4, expected[4])
        monkeypatch.undo()
    assert ckpt.writes == 4

    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(experiment) as stopped:
        ckpt = Checkpointer(model, interval=3600)
        with ckpt.kept_on_stop():
            for epoch in (1, 2, 3):
                model.fit(x, x[:, :2], verbose=0)
                ckpt.submit(epoch, {"loss": 0.25})
            after_3 = model_state(model)
            ckpt.wait()
            assert checkpoint_epoch(client, store, stopped.info.run_id) is None and ckpt.writes == 0  # none due yet
            model.fit(x, x[:, :2], verbose=0)  # epoch 4, interrupted before it ends
            raise KeyboardInterrupt
    assert ckpt.writes == 1
    assert client.get_run(stopped.info.run_id).info.status == "KILLED"
    assert_checkpoint(store, stopped.info.run_id, 3, after_3)  # the state after epoch 3, not the interrupted epoch 4's
    assert load(stopped.info.run_id, store).logs == {"loss": 0.25}
    mlflow.set_tracking_uri(None)
