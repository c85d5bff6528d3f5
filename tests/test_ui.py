"""``vaekit ui`` on the committed ``mlruns.example`` (moved to tmp_path), checked over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import HANG, free_port, run_cli, stop_process_group

EXAMPLE = Path(__file__).resolve().parent.parent / "mlruns.example"


def get(url: str, data: dict | None = None, timeout: float = 30) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


@pytest.fixture
def served_example(tmp_path):
    """A copy of mlruns.example in a new place, served by a real `vaekit ui`; the server is always stopped."""
    store = tmp_path / "moved elsewhere" / "mlruns.example"
    shutil.copytree(EXAMPLE, store)
    port = free_port()
    log = open(tmp_path / "ui.log", "w+")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Its own session: the test stops the server and every worker it started, and nothing else.
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "ui", str(store), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HANG
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"vaekit ui exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                get(f"{base}/health", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vaekit ui did not answer within {HANG} s")
                time.sleep(0.5)
        log.seek(0)
        yield base, log.read()
    finally:
        stop_process_group(proc)
        log.close()


def test_ui_serves_the_moved_example_store_runs_metrics_and_wavs(served_example):
    base, output = served_example
    exps = json.loads(get(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100}))["experiments"]
    exp = next(e for e in exps if e["name"] == "vaekit")
    assert f"{base}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning" in output

    runs = json.loads(get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]}))["runs"]
    assert len(runs) >= 2
    lambdas = set()
    for run in runs:
        assert run["info"]["status"] == "FINISHED"
        assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), "locations must survive moving"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {"test_mse", "test_kl", "vocoder_mel_error_db"} <= set(metrics)
        assert metrics["vocoder_mel_error_db"] >= 0
        lambdas.add({p["key"]: p["value"] for p in run["data"]["params"]}["loss.lambda"])
    assert len(lambdas) >= 2, "compare needs runs that differ in loss.lambda"

    run_id = runs[0]["info"]["run_id"]
    wav = get(f"{base}/get-artifact?path=samples/sample_00.wav&run_uuid={run_id}")
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 10_000
    png = get(f"{base}/get-artifact?path=figures/reconstructions.png&run_uuid={run_id}")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The served-artifacts API the UI uses for mlflow-artifacts: locations.
    rel = runs[0]["info"]["artifact_uri"].split(":", 1)[1].lstrip("/")
    listing = json.loads(get(f"{base}/api/2.0/mlflow-artifacts/artifacts?path={rel}/samples"))
    assert any(f["path"].endswith(".wav") for f in listing["files"])


def test_ui_refuses_a_missing_store_in_one_line(tmp_path):
    out = run_cli("ui", tmp_path / "nowhere", cwd=tmp_path, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("Error:") and "nowhere" in out.stderr
    out = run_cli("ui", cwd=tmp_path, timeout=60)
    assert out.returncode != 0 and "no mlflow.db" in out.stderr


def test_ui_command_and_ui_agree_on_store_names(tmp_path, monkeypatch):
    """What `vaekit run` tells users to type opens the store that run wrote to."""
    from vaekit.commands.ui import resolve_store, server_command
    from vaekit.tracking import ui_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").touch()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mlflow.db").touch()
    (tmp_path / "x.db").touch()
    for db in (tmp_path / "mlflow.db", tmp_path / "other" / "mlflow.db", tmp_path / "x.db"):
        uri = f"sqlite:///{db}"
        command = ui_command(uri).split()
        assert command[:2] == ["vaekit", "ui"]
        store = resolve_store(command[2] if len(command) > 2 else None)
        assert store.backend_uri == uri
        cmd = server_command(store, port=5001)
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1", "only an explicit --host binds elsewhere"
