"""Reliability: every way a run can end, bad tracking setups, four concurrent runs, repeatability, safety.

Real parts throughout: real `vaekit run` subprocesses signalled mid-training, a real sqlite MLflow
store read back with MlflowClient, real Keras training on tiny data (a small dense VAE), misbehaving
components from the plugin file tests/fault_plugins.py.  The fault table in docs/faults.md names these tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from conftest import run_cli
from reliability_helpers import SMALL_ARGS, load_faults, only_run, signal_mid_training, small_config, start_cli
from vaekit.errors import DataError, PluginError, TrainingError, VaekitError

# -- 1. lifecycle ------------------------------------------------------------------------------


def test_failure_in_sample_generation_ends_run_failed_with_tag_traceback_and_epochs_kept(notebook_data, store):
    from vaekit.commands.run import run

    load_faults()
    with pytest.raises(PluginError, match="vocoder 'fails'.*vocoder exploded"):
        run(small_config(notebook_data, store, epochs=2, vocoder="fails", options={"vocoder": {}}), progress=False)
    r = only_run(store)
    client = MlflowClient(store)
    assert r.info.status == "FAILED"
    assert "vocoder exploded" in r.data.tags["vaekit.error"]
    trace = Path(client.download_artifacts(r.info.run_id, "error/traceback.txt")).read_text()
    assert "Traceback" in trace and "vocoder exploded" in trace
    assert [m.step for m in client.get_metric_history(r.info.run_id, "loss")] == [0, 1]
    assert "model" not in {a.path for a in client.list_artifacts(r.info.run_id)}


def test_artifact_upload_failing_after_training_ends_run_failed_not_finished(notebook_data, store):
    from vaekit.commands.run import run

    load_faults()
    with pytest.raises(Exception):
        run(small_config(notebook_data, store, vocoder="breaks-artifacts", options={"vocoder": {}}), progress=False)
    r = only_run(store)
    assert r.info.status == "FAILED"
    assert r.data.tags["vaekit.error"]
    assert r.data.metrics["test_loss"] > 0  # training and evaluation were done and kept


def test_failure_while_logging_the_model_ends_run_failed(notebook_data, store):
    from vaekit.commands.run import run

    load_faults()
    with pytest.raises(Exception):
        run(small_config(notebook_data, store, encoder="unsaveable", samples=0, options={"encoder": {}}),
            progress=False)
    r = only_run(store)
    assert r.info.status == "FAILED" and r.data.tags["vaekit.error"]
    trace = Path(MlflowClient(store).download_artifacts(r.info.run_id, "error/traceback.txt")).read_text()
    assert "in log_model" in trace, trace[-2000:]
    assert np.isfinite(r.data.metrics["test_loss"])  # everything before the model was logged stays


def test_sigint_to_a_real_run_mid_training_ends_killed_exit_130_with_epoch_metrics_kept(notebook_data, store, tmp_path):
    run_id, returncode, err = signal_mid_training(notebook_data, store, tmp_path, signal.SIGINT)
    assert returncode == 130, err[-3000:]
    assert "Interrupted." in err and "Traceback" not in err
    client = MlflowClient(store)
    r = client.get_run(run_id)
    assert r.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")][:1] == [0]
    assert "test_loss" not in r.data.metrics
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints/slot0")} >= {"checkpoints/slot0/state.npz",
                                                                                     "checkpoints/slot0/state.json"}


# -- 2. NaN / Inf ------------------------------------------------------------------------------


def test_non_finite_loss_stops_at_once_and_fails_naming_epoch_batch_and_what_to_try(notebook_data, store):
    from vaekit.commands.run import run

    faults = load_faults()
    with pytest.raises(TrainingError) as info:
        run(small_config(notebook_data, store, epochs=3, loss="inf-at-batch"), progress=False)
    message = str(info.value)
    assert "inf at epoch 1, batch 2" in message
    assert "--learning-rate" in message and "lambda" in message
    r = only_run(store)
    assert r.info.status == "FAILED" and "epoch 1, batch 2" in r.data.tags["vaekit.error"]
    # Stopped at once: no epoch finished, so no epoch metrics and no checkpoint.
    client = MlflowClient(store)
    assert client.get_metric_history(r.info.run_id, "loss") == []
    assert client.list_artifacts(r.info.run_id, "checkpoints") == []
    # Training stopped in the epoch of the inf, not at the end of the run: the loss of batch 2 was computed and at
    # most that of batch 3 (the epoch's last: the check runs in Keras' callback thread and the epoch's end waits for
    # it), not the 9 batches of 3 epochs.
    assert 2 <= int(faults.INF_LOSS_CALLS[-1].numpy()) <= 3


# -- 3. tracking problems before training -------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


@pytest.fixture
def no_training(monkeypatch):
    """A spy: building or training a model fails the test (the checks under test must come first)."""
    from vaekit import training

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built or trained before the store was checked")

    monkeypatch.setattr(training, "build", forbidden)
    monkeypatch.setattr(training, "fit", forbidden)


def test_unreachable_tracking_server_is_a_one_line_error_before_tensorflow(notebook_data, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    # The CLI in a fresh process, which then says which heavy modules it imported.
    args = ["run", "--data", str(notebook_data), "--tracking-uri", uri, *SMALL_ARGS]
    code = (f"import sys\nfrom vaekit.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as e:\n"
            "    code = e.code\nprint('exit', code, sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and uri in errors[0] and "unreachable" in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stdout.split()[-2:] == ["2", "[]"], res.stdout  # exit 2; no Keras, no backend imported
    assert not list(tmp_path.iterdir())  # nothing written locally either


def test_unwritable_store_location_fails_before_training_and_creates_nothing(notebook_data, tmp_path, monkeypatch,
                                                                             no_training):
    """Root ignores permission bits, so the store is put below a regular file: unwritable for anyone."""
    from vaekit.commands.run import run

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"
    with pytest.raises(VaekitError, match=f"{blocker} is a file, not a directory"):
        run(small_config(notebook_data, store), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@contextlib.contextmanager
def unwritable_directory(path: Path):
    """Make the directory ``path`` unwritable for this process; yield the reason writes will give.

    A normal user: ``chmod 500``.  Root writes through permission bits, so (as in CI) the directory is
    bind-mounted onto itself read-only instead.  Skips, saying why, only when root may not mount here.
    """
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o700)
        return
    if shutil.which("mount") is None:
        pytest.skip("running as root (permission bits do not apply) and there is no `mount` for a read-only bind mount")
    res = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"running as root (permission bits do not apply) and a bind mount is not allowed here: "
                    f"{res.stderr.strip()}")
    try:
        res = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"running as root and the bind mount cannot be made read-only here: {res.stderr.strip()}")
        yield "Read-only file system"
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # busy: detach now, unmount when free


def test_store_directory_without_write_permission_fails_before_training(notebook_data, tmp_path, no_training):
    from vaekit.commands.run import run

    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable_directory(locked) as why:
        with pytest.raises(VaekitError, match=rf"{locked} is not writable \({why}\)"):
            run(small_config(notebook_data, f"sqlite:///{locked / 'mlflow.db'}"), progress=False)
    assert not any(locked.iterdir())


def test_unwritable_artifact_location_fails_before_any_run_exists(notebook_data, store, tmp_path, no_training):
    from vaekit.commands.run import run

    blocker = tmp_path / "artifacts-are-a-file"
    blocker.write_text("x")
    client = MlflowClient(store)
    exp_id = client.create_experiment("vaekit", artifact_location=(blocker / "arts").as_uri())
    with pytest.raises(VaekitError, match=r"experiment 'vaekit' artifact location .*cannot create it"):
        run(small_config(notebook_data, store), progress=False)
    assert client.search_runs([exp_id]) == []


# -- 4. concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("store_exists", [True, False], ids=["existing-store", "new-store"])
def test_four_concurrent_runs_on_one_sqlite_store_all_complete(notebook_data, tmp_path, store_exists):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if store_exists:
        from vaekit.tracking import check_store

        check_store(store, "vaekit", (tmp_path / "mlruns").as_uri())  # not ./mlruns of where pytest started
    # A checkpoint after every epoch (interval 0): each run writes one, so the empty checkpoints/ below
    # shows that FINISHED deletes it (checkpoint.discard), not that none was ever written.
    procs = [start_cli("run", "--data", notebook_data, "--tracking-uri", store, "--epochs", "2", "--seed", i,
                       "--checkpoint-interval", "0", "--run-name", f"r{i}", *SMALL_ARGS, cwd=tmp_path)
             for i in range(4)]
    results = [(p, *p.communicate(timeout=400)) for p in procs]
    for p, out, err in results:
        assert p.returncode == 0, err[-3000:]
        assert "database is locked" not in err and "Traceback" not in err
    client = MlflowClient(store)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids)
    assert sorted(r.info.run_name for r in runs) == ["r0", "r1", "r2", "r3"]
    models = {m.source_run_id: m for m in client.search_logged_models(exp_ids)}
    for r in runs:
        assert models[r.info.run_id].status == LoggedModelStatus.READY  # the Keras model, logged in full
        assert client.list_artifacts(r.info.run_id, "checkpoints") == []  # written each epoch, dropped at FINISHED
        assert r.info.status == "FINISHED"
        assert r.data.params["seed"] == r.info.run_name[1:] and r.data.params["encoder"] == "dense"
        assert sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss")) == [0, 1]
        assert all(np.isfinite(r.data.metrics[k]) for k in ("test_loss", "test_mse", "test_kl", "train_seconds"))
        top = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert top >= {"config.toml", "audio.json", "samples"}, top
        assert {a.path for a in client.list_artifacts(r.info.run_id, "samples")} == {"samples/sample_00.wav",
                                                                                      "samples/sample_00.png"}


# -- 6. reproducibility ------------------------------------------------------------------------

#: Same seed, data and settings on CPU: test metrics agree to this relative tolerance (observed: exactly).
REPRO_RTOL = 1e-5


def test_same_seed_same_test_metrics_on_cpu_and_deterministic_switch(notebook_data, store):
    from tensorflow.python.framework import config as tf_config  # the public API can enable, not query

    from vaekit.commands.run import run

    a = run(small_config(notebook_data, store, samples=0), progress=False)
    b = run(small_config(notebook_data, store, samples=0, deterministic=True), progress=False)
    assert tf_config.is_op_determinism_enabled()
    for key in ("test_loss", "test_mse", "test_kl"):
        assert b.metrics[key] == pytest.approx(a.metrics[key], rel=REPRO_RTOL), key
    c = run(small_config(notebook_data, store, samples=0, seed=1), progress=False)
    assert c.metrics["test_loss"] != pytest.approx(a.metrics["test_loss"], rel=REPRO_RTOL)
    assert MlflowClient(store).get_run(b.run_id).data.params["deterministic"] == "True"


# -- 7. security -------------------------------------------------------------------------------


def test_arrays_never_unpickle(notebook_data, tmp_path):
    import shutil

    from vaekit.data import load_notebook_dir

    bad = tmp_path / "nb"
    shutil.copytree(notebook_data, bad)
    np.save(bad / "x_test.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="x_test.npy: holds Python objects"):
        load_notebook_dir(bad)
    # Every np.load in the package refuses pickles.
    src = Path(__file__).parents[1]
    for path in [*src.joinpath("vaekit").rglob("*.py"), *src.joinpath("plugins").rglob("*.py")]:
        for line in path.read_text().splitlines():
            if "np.load(" in line and "def " not in line:
                assert "allow_pickle=False" in line, f"{path}: {line.strip()}"


def test_models_load_with_safe_mode_refusing_code(notebook_data, store, tmp_path):
    """A run whose logged model holds Python code (a Lambda layer) is refused by vaekit's own loader,
    in one line, and the code does not run."""
    from vaekit.commands.run import run
    from vaekit.errors import VaekitError
    from vaekit.logged import load_model

    load_faults()
    marker = tmp_path / "lambda-ran"
    result = run(small_config(notebook_data, store, encoder="lambda", samples=0,
                              options={"encoder": {"marker": str(marker)}}), progress=False)
    assert marker.exists()  # the Lambda's code ran while training: the marker shows when it runs
    marker.unlink()
    with pytest.raises(VaekitError, match=rf"run {result.run_id}: its logged model holds Python code \(a Lambda "
                                          r"layer\); vaekit loads models with Keras safe_mode"):
        load_model(result.run_id, "FINISHED")
    assert not marker.exists()


def test_plugin_code_comes_only_from_entry_points_and_named_files(tmp_path):
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    for name in ("plugins.py", "vaekit_plugins.py", "vaekit_plugin.py"):
        (tmp_path / name).write_text(code)
    res = run_cli("plugins", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not marker.exists()
    res = run_cli("plugins", "--plugin", tmp_path / "plugins.py", cwd=tmp_path)
    assert marker.exists()  # named explicitly: imported (and refused, having no hooks, or listed)


def test_names_that_become_artifact_paths_are_sanitised():
    from vaekit.runlog import safe_name

    for evil in ("../../etc/passwd", "/abs/path", "a\\b", "..", "", "x/../../y", "name with spaces\n"):
        out = safe_name(evil)
        assert out and "/" not in out and "\\" not in out and not out.startswith(".") and "\n" not in out, (evil, out)
    assert safe_name("conv2-v1.0") == "conv2-v1.0"
