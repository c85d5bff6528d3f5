"""A team tracking server: a real `mlflow server` (sqlite + served artifacts), `vaekit run` logging to it over HTTP."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import HANG, free_port, run_cli, stop_process_group


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1:PORT with a sqlite backend and --serve-artifacts; always stopped."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--serve-artifacts",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HANG
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, tmp_path / "artifacts"
    finally:
        # The server forks workers: stop its whole process group, which it leads (start_new_session).
        stop_process_group(proc, grace=5)
        log.close()


def test_run_logs_to_a_tracking_server_over_http(mlflow_server, notebook_data, tmp_path, monkeypatch):
    import soundfile as sf

    url, artifacts = mlflow_server
    work = tmp_path / "client"
    work.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = run_cli("run", "--data", notebook_data, "--tracking-uri", url, "--epochs", "1", "--batch-size", "32",
                  "--samples", "1", "--vocoder", "fastgl", "--experiment", "team", "--quiet", cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"open {url}" in res.stdout
    run_id = res.stdout.split("run id:")[1].split()[0]
    assert not any(work.iterdir()), "nothing is written next to the client"

    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # artifacts go through the server
    assert run.data.params["vocoder"] == "fastgl" and run.data.params["epochs"] == "1"
    assert np.isfinite(run.data.metrics["test_mse"])
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0]

    # The WAV as the UI fetches it, over HTTP, and where the server stored it.
    with urllib.request.urlopen(f"{url}/get-artifact?path=samples/sample_00.wav&run_uuid={run_id}", timeout=30) as resp:
        y, sr = sf.read(io.BytesIO(resp.read()))
    assert sr == 22050 and y.shape == (22050,) and np.abs(y).max() > 0
    stored = list(Path(artifacts).rglob("sample_00.wav"))
    assert len(stored) == 1 and run_id in str(stored[0])


def test_check_store_says_an_unreachable_server_in_one_line_naming_the_flag(tmp_path):
    """The message itself; that `vaekit run` says it before building or training anything (before importing
    Keras even) is tests/test_reliability.py::test_unreachable_tracking_server_is_a_one_line_error_before_tensorflow."""
    from vaekit.errors import VaekitError
    from vaekit.tracking import check_store

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(VaekitError, match=f"--tracking-uri {url}: tracking server unreachable"):
        check_store(url, "team")
