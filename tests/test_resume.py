"""Checkpoints and resume: a run stopped by SIGTERM (or failed) continues in the same MLflow run
from its last completed epoch and ends where an uninterrupted run with the same seed ends."""

from __future__ import annotations

import signal
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
    from vaekit.run import run

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


def test_a_run_left_running_by_sigkill_is_resumable_once_its_process_is_gone(notebook_data, store, tmp_path):
    """SIGKILL (the OOM killer, a power cut) cannot be caught: the run stays RUNNING. Its host and pid
    tags tell that nobody runs it any more, so --resume takes it; a live run's id is refused."""
    from vaekit.checkpoint import resume_config
    from vaekit.run import run

    # SIGKILL cannot be caught, so nothing is written at the stop: only checkpoints written during
    # training survive it (every epoch here; by default every 60 s).
    proc = start_cli(*slow_run_args(notebook_data, store, 2), "--checkpoint-interval", "0", cwd=tmp_path)
    try:
        run_id = wait_for(first_epoch_logged(store), proc=proc, what="the first epoch's metrics")
        with pytest.raises(ConfigError, match="the run is RUNNING; only KILLED or FAILED.*whose process died"):
            resume_config(run_id, store)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"

    result = run(resume_config(run_id, store, trust_plugins=True), progress=False, resume=run_id)  # imports its plugin file
    r = client.get_run(run_id)
    assert result.run_id == run_id and r.info.status == "FINISHED"
    assert [s for s, _ in history(client, run_id, "loss")] == [0, 1]


def test_a_failed_run_resumes_after_its_last_epoch_and_finishes(notebook_data, store, tmp_path):
    """A transient failure after training (here in sample generation): resuming skips straight to it."""
    from vaekit.checkpoint import resume_config
    from vaekit.run import run

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
    from vaekit.run import run

    # Checkpoints written after every epoch, and checkpoint.discard watched: the run below must have
    # had a checkpoint for "a finished run's checkpoints are gone" to mean anything.
    seen_by_discard = []

    def discard(artifact_uri):
        seen_by_discard.append(sorted(p.name for p in (Path(urlparse(artifact_uri).path) / "checkpoints").iterdir()))
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
    assert seen_by_discard == [["state.json", "state.npz"]]  # there was one, and discard was called on it
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
    state = Path(urlparse(failed.info.artifact_uri).path) / "checkpoints" / "state.npz"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="checkpoints/state.npz does not match checkpoints/state.json"):
        run(resume_config(failed.info.run_id, store), progress=False, resume=failed.info.run_id)
    assert client.get_run(failed.info.run_id).info.status == "FAILED"

    # Settings cannot change on resume: one line, before anything is loaded.
    res = run_cli("run", "--resume", done.run_id, "--epochs", "5", "--tracking-uri", store, cwd=tmp_path)
    assert res.returncode == 2
    assert "Error: --resume continues a run with its own settings; drop --epochs" in res.stderr


def test_checkpoints_are_written_every_interval_and_always_at_a_stop(store, monkeypatch):
    """The policy, on a real model and store: the last epoch is kept in memory; written when the
    interval has passed (0: every epoch) and, whatever the interval, when the run stops early."""
    import json

    import keras
    import mlflow

    from vaekit import checkpoint, tracking
    from vaekit.checkpoint import Checkpointer, load

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((4, 3), dtype="float32")
    client = MlflowClient(store)

    def written_epoch(run_id):
        if not client.list_artifacts(run_id, "checkpoints"):
            return None
        return json.loads(Path(client.download_artifacts(run_id, "checkpoints/state.json")).read_text())["epoch"]

    def state():
        return [v.numpy() for v in model.variables] + [v.numpy() for v in model.optimizer.variables]

    def assert_saved(run_id, epoch, expected):
        saved = load(run_id, store)
        assert saved.epoch == epoch
        for got, want in zip(saved.model_arrays + saved.optimizer_arrays, expected, strict=True):
            np.testing.assert_array_equal(got, want)

    experiment = tracking.check_store(store, "checkpoints")
    with tracking.tracked_run(experiment) as every_epoch:
        ckpt = Checkpointer(model, interval=0)
        for epoch in (1, 2):
            model.fit(x, x[:, :2], verbose=0)
            ckpt.submit(epoch, {"loss": 0.5})
            ckpt.wait()
            assert written_epoch(every_epoch.info.run_id) == epoch
        # Epoch 4 trains and is taken while epoch 3 is still being written (the write made slow):
        # snapshot arrays are reused, but never the set a write in flight reads.
        written = {}

        def slow_write(arrays, epochs_done, *rest):
            time.sleep(1.0)
            written[epochs_done] = [a.copy() for a in arrays.values()]
            real_write(arrays, epochs_done, *rest)

        real_write = checkpoint.write
        monkeypatch.setattr(checkpoint, "write", slow_write)
        expected = {}
        for epoch in (3, 4):
            model.fit(x, x[:, :2], verbose=0)
            ckpt.submit(epoch, {"loss": 0.5})
            expected[epoch] = state()
        ckpt.wait()
        assert len(ckpt._buffers) == 2  # a second set, taken while the first was being written
        for epoch in (3, 4):
            for got, want in zip(written[epoch], expected[epoch], strict=True):
                np.testing.assert_array_equal(got, want)
        assert_saved(every_epoch.info.run_id, 4, expected[4])
        monkeypatch.undo()
    assert ckpt.writes == 4

    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(experiment) as stopped:
        ckpt = Checkpointer(model, interval=3600)
        with ckpt.kept_on_stop():
            for epoch in (1, 2, 3):
                model.fit(x, x[:, :2], verbose=0)
                ckpt.submit(epoch, {"loss": 0.25})
            after_3 = state()
            ckpt.wait()
            assert written_epoch(stopped.info.run_id) is None and ckpt.writes == 0  # none due yet
            model.fit(x, x[:, :2], verbose=0)  # epoch 4, interrupted before it ends
            raise KeyboardInterrupt
    assert ckpt.writes == 1
    assert client.get_run(stopped.info.run_id).info.status == "KILLED"
    assert_saved(stopped.info.run_id, 3, after_3)  # the state after epoch 3, not the interrupted epoch 4's
    assert load(stopped.info.run_id, store).logs == {"loss": 0.25}
    mlflow.set_tracking_uri(None)
