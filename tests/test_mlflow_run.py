"""Issue 13 items 1, 2, 3, 7, 8: what one real ``vaekit run`` leaves in MLflow and on the console.

One tiny run in a real subprocess (module fixture), started from an empty working directory with
the store elsewhere and ``--system-metrics``; each test reads what it left.  ``vaekit ui`` is a
real server, stopped by real signals.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import HANG, free_port, restore_sigint, wall_limit, write_notebook_data

#: Lines a default run must not print (written independently of vaekit.console's own list).
NOISE = [re.compile(p) for p in (
    r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]",            # absl/glog lines of TensorFlow and XLA
    r"absl::InitializeLog",
    r"oneDNN custom operations|Could not find cuda drivers|failed call to cuInit",
    r"\bINFO mlflow",                                   # MLflow's INFO records
    r"without specifying model signature",
)]


def clean_env(**extra) -> dict:
    """The environment a user has: none of the variables vaekit sets to quiet the libraries."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``vaekit run`` from an empty directory, the store in another: (cwd, store dir, run, stdout, stderr)."""
    root = tmp_path_factory.mktemp("mlflow-run")
    data = write_notebook_data(root / "nb", n_train=24, n_test=8)
    cwd, store = root / "cwd", root / "store"
    cwd.mkdir()
    store.mkdir()
    env = clean_env(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5", VAEKIT_CACHE=str(root / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "vaekit", "run", "--data", str(data), "--tracking-uri", str(store),
                          "--epochs", "1", "--batch-size", "16", "--latent-dim", "4", "--samples", "1",
                          "--option", "vocoder.n_iter=4", "--system-metrics"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = re.search(r"run id:\s+(\w+)", out.stdout).group(1)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    return cwd, store, data, client, client.get_run(run_id), out


def test_artifacts_go_beside_the_store_and_the_working_directory_stays_empty(tiny_run):
    cwd, store, _, client, run, out = tiny_run
    assert list(cwd.iterdir()) == []
    artifacts = store / "artifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
    assert (artifacts / "config.toml").is_file() and list((artifacts / "samples").glob("*.wav"))
    assert client.get_experiment(run.info.experiment_id).artifact_location.endswith(
        str(store / "artifacts" / run.info.experiment_id))
    assert f"samples:   {artifacts}/samples/" in out.stdout  # a path the user can open, not a URI


def test_a_store_folder_moved_whole_keeps_its_artifacts(tiny_run, tmp_path):
    """Moved (or copied) with its artifacts/ folder, a store finds them in the new place; the original is untouched."""
    from vaekit import tracking

    _, store, _, client, run, _ = tiny_run
    moved = tmp_path / "moved elsewhere" / "store"
    shutil.copytree(store, moved)
    uri = f"sqlite:///{moved / 'mlflow.db'}"
    moved_client, moved_run = tracking.get_run(run.info.run_id, uri, what="run")
    assert str(moved) in moved_run.info.artifact_uri.replace("%20", " ")
    assert moved_client.download_artifacts(run.info.run_id, "config.toml", str(tmp_path)).endswith("config.toml")
    assert str(store) in client.get_run(run.info.run_id).info.artifact_uri  # the original store still points at its own


def test_training_and_test_data_are_logged_as_datasets_with_a_digest_over_all_the_data(tiny_run):
    import json

    from vaekit.runlog import data_digest

    _, _, data, _, run, _ = tiny_run
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"}
    for context, name in (("training", "x_train"), ("test", "x_test")):
        dataset = inputs[context]
        assert dataset.name == f"notebook:{data.name}"
        assert dataset.digest == data_digest(np.load(data / f"{name}.npy"))
        assert json.loads(dataset.source)["uri"] == str(data)
        profile = json.loads(dataset.profile)
        assert profile["audio.sr"] == 22050 and profile["audio.n_mels"] == 50


def test_the_digest_sees_every_clip_where_mlflows_own_sees_only_the_first_10000_numbers():
    from mlflow.data.digest_utils import compute_numpy_digest

    from vaekit.runlog import data_digest

    x = np.random.default_rng(0).random((8, 50, 50), dtype=np.float32)
    changed = x.copy()
    changed[-1, 10, 10] += 0.5  # one number of the last clip, past the first 10,000
    assert data_digest(x) == data_digest(x.copy())
    assert data_digest(changed) != data_digest(x)
    assert compute_numpy_digest(changed) == compute_numpy_digest(x), "MLflow's default would miss it"


def test_the_model_has_a_signature_and_no_warning_was_printed(tiny_run):
    from mlflow.models import Model

    _, _, _, client, run, out = tiny_run
    [model] = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run.info.run_id and m.name == "model"]
    signature = Model.load(model.artifact_location).signature
    assert "without specifying model signature" not in out.stderr
    assert signature is not None
    assert signature.inputs.inputs[0].shape == (-1, 50, 50, 1) and signature.outputs.inputs[0].shape == (-1, 50, 50, 1)


def test_a_default_run_prints_progress_and_results_but_no_library_noise(tiny_run):
    *_, out = tiny_run
    noisy = [line for line in (out.stdout + out.stderr).splitlines() if any(p.search(line) for p in NOISE)]
    assert noisy == []
    assert "test loss:" in out.stdout and "run id:" in out.stdout
    assert re.search(r"\d+/\d+ .*loss", out.stdout), "training progress is still shown"


def test_system_metrics_are_logged_under_system(tiny_run):
    _, _, _, client, run, _ = tiny_run
    keys = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, keys
    assert client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")


def test_the_console_filter_drops_library_lines_keeps_the_rest_and_verbose_keeps_all():
    """Native libraries write to file descriptor 2 itself: the filter works at that level, in a real process."""
    script = (
        "import os, sys\n"
        "from vaekit import console\n"
        "console.configure(verbose=sys.argv[1] == 'verbose')\n"
        "for line in (b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR',\n"
        "             b'I0000 00:00:1795749785.442761   30701 port.cc:153] oneDNN custom operations are on.',\n"
        "             b'I0000 00:00:1795749785.448078   30701 cudart_stub.cc:31] Could not find cuda drivers on your machine',\n"
        "             b'E0000 00:00:1795749794.867215   30701 cuda_platform.cc:52] failed call to cuInit: INTERNAL',\n"
        "             b'E0000 00:00:1795749794.867215   30701 something.cc:1] a real error'):\n"
        "    os.write(2, line + b'\\n')\n"
        "print('a warning that matters', file=sys.stderr)\n"
        "os.write(2, b'partial line without newline')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script, "default"], env=clean_env(), capture_output=True, text=True,
                           timeout=60)
    assert quiet.stderr.splitlines() == ["E0000 00:00:1795749794.867215   30701 something.cc:1] a real error",
                                         "a warning that matters", "partial line without newline"]
    loud = subprocess.run([sys.executable, "-c", script, "verbose"], env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert len(loud.stderr.splitlines()) == 7 and "oneDNN custom operations" in loud.stderr


def descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_vaekit_ui_serves_the_store_without_job_consumers_and_stops_within_3_s(tiny_run, tmp_path, how):
    """`vaekit ui STORE` serves the run's artifacts from the store folder; no job-execution processes; SIGTERM
    to it (``kill``) or Ctrl-C (SIGINT to the terminal's process group) stops it and everything it started."""
    import psutil

    _, store, _, _, run, _ = tiny_run
    port = free_port()
    log = open(tmp_path / "ui.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "ui", str(store), "--port", str(port)], cwd=tmp_path,
                            env=clean_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=restore_sigint)
    started = []
    try:
        deadline = time.monotonic() + HANG
        while True:
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/get-artifact?path=config.toml&run_uuid="
                                            f"{run.info.run_id}", timeout=5) as resp:
                    assert b"epochs = 1" in resp.read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"vaekit ui did not answer within {HANG} s"
                time.sleep(0.5)
        started = descendants(proc.pid)
        commands = [" ".join(p.cmdline()) for p in started]
        assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
        assert len(started) <= 2, commands  # mlflow server and its one uvicorn worker
        t0 = time.monotonic()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - t0
        assert took < wall_limit(3), took  # about 2 s on an idle 2-core machine (docs/listen.md)
        time.sleep(0.2)
        assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        for p in [*started, psutil.Process(proc.pid)] if proc.poll() is None else started:
            try:
                p.kill()
            except psutil.Error:
                pass
        proc.wait()
        log.close()
