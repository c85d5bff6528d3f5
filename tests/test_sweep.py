"""`vaekit sweep`: grid points as nested child runs, in parallel, a failing child recorded FAILED."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

import vaekit
from conftest import run_cli
from reliability_helpers import FAULTS
from vaekit.commands.sweep import grid_points, parse_grid
from vaekit.config import RunConfig
from vaekit.errors import ConfigError, PluginError


def test_grid_parsing_and_points():
    grid = parse_grid(["loss.lambda=100,500,1000", "latent-dim=8,20"])
    assert grid == [("loss.lambda", [100, 500, 1000]), ("latent_dim", [8, 20])]
    points = grid_points(grid)
    assert len(points) == 6 and points[0] == {"loss.lambda": 100, "latent_dim": 8}
    assert points[-1] == {"loss.lambda": 1000, "latent_dim": 20}
    for bad, message in [("lambda=1,2", "neither KIND.OPTION nor a run setting"), ("loss.lambda=", "expected KEY=V1,V2"),
                         ("nosuch.x=1", "unknown kind"), ("tracking_uri=a,b", "neither"),
                         ("loss.=1,2", "no option name after loss.")]:
        with pytest.raises(ConfigError, match=message):
            parse_grid([bad])


def test_sweep_rejects_bad_points_before_any_run(notebook_data, store):
    from vaekit.commands.sweep import sweep

    base = RunConfig(data=str(notebook_data), tracking_uri=store, epochs=1)
    with pytest.raises(PluginError, match="has no option 'nosuch'"):
        sweep(base, ["encoder.nosuch=1,2"])
    with pytest.raises(ConfigError, match="--grid epochs=0: --epochs must be at least 1"):
        sweep(base, ["epochs=0,1"])
    assert MlflowClient(store).search_runs([e.experiment_id for e in MlflowClient(store).search_experiments()]) == []


def test_sweep_runs_children_in_parallel_under_a_parent_and_survives_a_failed_child(notebook_data, store, tmp_path):
    """--jobs 2: both children start before either ends; the parent and children carry their tags."""
    # units=3 passes option checking (an int, no declared range) but the picky encoder rejects it when
    # it is built, so that child fails inside its own process, before its MLflow run starts.
    res = run_cli("sweep", "--grid", "encoder.units=3,4", "--jobs", "2", "--data", notebook_data,
                  "--tracking-uri", store, "--epochs", "1", "--batch-size", "32", "--samples", "1",
                  "--plugin", FAULTS, "--encoder", "picky", "--decoder", "dense", "--option", "decoder.units=4",
                  "--vocoder", "fastgl", "--option", "vocoder.n_iter=2",
                  "--latent-dim", "4", "--validation-split", "0", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Error: 1 of 2 runs failed" in res.stderr
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("vaekit")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("vaekit.sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.params["sweep.grid.encoder.units"] == "3,4"
    assert parent.data.metrics["sweep.finished"] == 1 and parent.data.metrics["sweep.failed"] == 1
    children = {r.data.tags["vaekit.sweep.point"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"0", "1"}
    failed, ok = children["0"], children["1"]
    assert failed.info.status == "FAILED" and "units must be even" in failed.data.tags["vaekit.error"]
    assert failed.data.params["encoder.units"] == "3"
    assert ok.info.status == "FINISHED" and ok.data.params["encoder.units"] == "4"
    assert ok.data.params["latent_dim"] == "4" and ok.data.params["vocoder"] == "fastgl"
    assert ok.data.metrics["test_mse"] >= 0
    # The table: a header with the grid key and metrics, one row per child.
    lines = res.stdout.splitlines()
    header = next(line for line in lines if line.startswith("#"))
    assert "encoder.units" in header and "status" in header and "test_mse" in header
    assert any(line.split()[:3] == ["0", "3", "FAILED"] for line in lines)
    assert any(line.split()[:3] == ["1", "4", "FINISHED"] and ok.info.run_id in line for line in lines)
    assert f"parent run: {parent.info.run_id}" in res.stdout
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.txt", "children", "config.toml"}
    # In parallel: both children were started before either ended (one at a time, the first ends before the second starts).
    events = [(m.group(2), m.group(1)) for m in (re.match(r"\[(\d)\] (start|done|FAILED)\b", line) for line in lines) if m]
    assert sorted(events[:2]) == [("start", "0"), ("start", "1")] and len(events) == 4, events
    # The parent's and the children's tags (docs/sweeps.md, docs/logged.md).
    assert {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.")} == {
        "vaekit.version": vaekit.__version__, "vaekit.sweep": "parent"}, parent.data.tags
    assert parent.info.run_name == "sweep encoder.units(2)"
    assert {c.data.tags["vaekit.sweep.parent"] for c in children.values()} == {parent.info.run_id}
    assert sorted(c.data.tags["vaekit.trial"] for c in children.values()) == ["0", "1"]


def test_a_second_ctrl_c_stops_the_children_at_once_and_none_outlives_the_sweep(notebook_data, store, tmp_path):
    """First Ctrl-C: children get SIGTERM and are waited for. Second Ctrl-C while they stop: the ones
    left are killed, so the sweep ends now (not after a child's 300 s batch) and no child runs on."""
    import contextlib
    import os
    import signal
    import time

    from conftest import wall_limit
    from reliability_helpers import FAULTS, SMALL_ARGS, query_store, start_cli, wait_for

    # Every child's second epoch naps 300 s a batch: a graceful stop would take that long, far beyond the limit
    # below however loaded the machine (a 30 s nap could be nearly over when the Ctrl-C comes).
    proc = start_cli("sweep", "--grid", "seed=0,1", "--jobs", "2", "--data", notebook_data, "--tracking-uri", store,
                     "--epochs", "3", *SMALL_ARGS, "--plugin", FAULTS, "--loss", "slow-mse-kl",
                     "--option", "loss.seconds=300", cwd=tmp_path)
    def both_children_in_epoch_2():
        rows = query_store(store, "SELECT COUNT(DISTINCT run_uuid) FROM metrics WHERE key = 'loss'")
        return bool(rows) and rows[0][0] == 2

    try:
        wait_for(both_children_in_epoch_2, proc=proc, what="both children's first epoch")
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=240)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill() if proc.poll() is None else None
        for (pid,) in query_store(store, "SELECT value FROM tags WHERE key = 'vaekit.pid'") or []:
            with contextlib.suppress(OSError):  # a child left napping by a failure above
                os.kill(int(pid), signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "Interrupted." in err and "Traceback" not in err
    assert elapsed < wall_limit(25), f"the sweep waited {elapsed:.0f} s for its children after the second Ctrl-C"
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("vaekit").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("vaekit.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "KILLED"
    assert len(children) == 2 and all(c.info.status == "KILLED" for c in children), [c.info.status for c in children]
    for child in children:  # no child process is left
        with pytest.raises(ProcessLookupError):
            os.kill(int(child.data.tags["vaekit.pid"]), 0)


def test_a_sweep_whose_children_all_fail_prints_their_table_even_when_quiet(notebook_data, store, tmp_path):
    # units=3 passes option checking but the picky encoder rejects it: both children fail in their own process.
    res = run_cli("sweep", "--grid", "seed=0,1", "--option", "encoder.units=3", "--plugin", FAULTS, "--encoder", "picky",
                  "--decoder", "dense", "--data", notebook_data, "--tracking-uri", store, "--epochs", "1", "--samples", "0",
                  "--quiet", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("vaekit").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("vaekit.sweep") == "parent")
    assert parent.info.status == "FAILED"
    assert f"Error: all 2 runs of sweep {parent.info.run_id} failed; first error:" in res.stderr
    assert "units must be even" in res.stderr and "Traceback" not in res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert ["#", "seed", "status", "run", "id"] == rows[0]
    assert [r[:3] for r in rows[2:]] == [["0", "0", "FAILED"], ["1", "1", "FAILED"]]
