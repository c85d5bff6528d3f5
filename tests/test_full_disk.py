"""A full disk (issue 16 item 3), on a real tmpfs of a few MB: one line, the run FAILED, the traceback
kept in a file whose path is printed, and no partial artifact left looking complete.

Mounting needs root (CI runs as root); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli
from reliability_helpers import SMALL_ARGS, only_run


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` for the block (skips where mounting is not allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); CI runs as root")
    path.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def one_error_line(res) -> str:
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    line = lines[0]
    saved = Path(re.search(r"traceback in (\S+)$", line).group(1))
    assert "Traceback (most recent call last)" in saved.read_text()
    saved.unlink()
    return line


def model_files(root: Path) -> list[Path]:
    return sorted(root.rglob("model.keras"))


ARGS = [*SMALL_ARGS, "--epochs", "2"]


def test_store_and_artifacts_on_a_full_disk(notebook_data, tmp_path):
    """docs/faults.md's row: deleting what was half-written frees the space to end the run FAILED, as the line says."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        res = run_cli("run", "--data", notebook_data, "--tracking-uri", disk, *ARGS, cwd=disk)
        line = one_error_line(res)
        assert re.match(r"Error: cannot write \((database or disk is full|No space left on device)\); ", line), line
        run = only_run(f"sqlite:///{disk / 'mlflow.db'}")
        assert run.info.status == "FAILED" and f"run {run.info.run_id} ended FAILED, with nothing half-written kept" in line, line
        assert model_files(disk) == [], "a truncated model.keras was left behind"


def test_artifacts_alone_on_a_full_disk(notebook_data, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tmpfs(tmp_path / "disk", "1m") as disk:
        MlflowClient(store).create_experiment("vaekit", artifact_location=(disk / "artifacts").as_uri())
        res = run_cli("run", "--data", notebook_data, "--tracking-uri", store, *ARGS, cwd=tmp_path)
        line = one_error_line(res)
        run = only_run(store)
        assert run.info.status == "FAILED" and f"run {run.info.run_id} ended FAILED" in line, line
        assert "No space left on device" in line and "No space left" in run.data.tags["vaekit.error"]
        assert model_files(disk) == [], "a truncated model.keras was left behind"
        assert model_files(tmp_path) == []
