"""`vaekit tune`: a space checked before anything starts; trials as nested runs of one parent per study, shared by
two processes on one journal storage, stopped by Ctrl-C and continued by a rerun, pruned on the per-epoch validation
metric.  Real processes, a real Optuna journal file and a real MLflow sqlite store."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

import vaekit
from conftest import HANG, error_line, free_port, required, restore_sigint
from reliability_helpers import FAULTS, query_store, wait_for

#: A tiny dense VAE: what is tested here is the study around it.
TINY = ["--encoder", "dense", "--decoder", "dense", "--latent-dim", "4", "--batch-size", "32", "--samples", "0",
        "--option", "encoder.units=16", "--option", "decoder.units=16"]
SPACE = '"loss.lambda" = {low = 100, high = 1000, log = true}\n'


def start_tune(*args, cwd):
    """``vaekit tune ARGS`` as a process that takes Ctrl-C (SIGINT) even when pytest runs as a background job."""
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.Popen([sys.executable, "-m", "vaekit", "tune", *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=restore_sigint)


def finish(proc, timeout=HANG):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill() if proc.poll() is None else None
    return proc.returncode, out, err


def load_study(path, name="space"):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def study_runs(store):
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("vaekit").experiment_id])
    parents = [r for r in runs if r.data.tags.get("vaekit.tune") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


@pytest.mark.parametrize("space, flags, message", [
    ('nosuch = [1, 2]\n', [], "nosuch: 'nosuch' is neither KIND.OPTION nor a run setting"),
    ('"loss.lambda" = {low = -1, high = 10}\n', [], "loss.lambda=-1: "),
    ('"loss.lambda" = {low = 10, high = 1}\n', [], "loss.lambda: low must be below high, got low = 10, high = 1"),
    ('"loss.lambda" = {low = 0, high = 1, log = true}\n', [], "loss.lambda: a log range needs low > 0"),
    ('"loss.lambda" = {low = 1, high = 9, stride = 2}\n', [], "unknown key 'stride' in a range"),
    ('latent_dim = {low = 4, high = 8.0}\n', [], "latent_dim=5.333: --latent-dim: expected int, got 5.33"),
    ('encoder = ["dense", "nosuch"]\n', [], "encoder=nosuch: "),
    ('encoder = ["conv2", "dense"]\n"encoder.filters1" = [8, 16]\n', [], "encoder=dense: "),
    ('tracking_uri = ["a", "b"]\n', [], "neither KIND.OPTION nor a run setting"),
    ('"loss.lambda" = {low = 100.0, high = 500.0}\n', ["--sampler", "grid"], "loss.lambda is a float range; --sampler grid"),
    ("latent_dim = [\n", [], "not valid TOML"),
    ("", [], "varies nothing"),
])
def test_a_bad_space_is_one_error_line_before_any_study_or_run(tmp_path, store, space, flags, message):
    from click.testing import CliRunner

    from vaekit.cli import main

    (tmp_path / "space.toml").write_text(space)
    result = CliRunner().invoke(main, ["tune", "--space", str(tmp_path / "space.toml"), "--trials", "2",
                                       "--tracking-uri", store, *flags])
    line = error_line(result)
    assert line.startswith(f"Error: --space {tmp_path / 'space.toml'}: ") and message in line, line
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()


def test_two_processes_share_one_journal_study_each_trial_runs_once_under_one_parent(notebook_data, store, tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    args = ["--space", "space.toml", "--trials", 3, "--data", notebook_data, "--tracking-uri", store, "--epochs", 1, *TINY]
    procs = [start_tune(*args, cwd=tmp_path) for _ in range(2)]
    results = [finish(p) for p in procs]
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
    study = load_study(tmp_path / "optuna.journal")  # the default: beside the tracking store
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.number for t in done) == [0, 1, 2], [(t.number, t.state) for t in study.trials]
    assert all(t.user_attrs.get("vaekit.surplus") for t in study.trials if t not in done)

    client, parents, children = study_runs(store)
    assert len(parents) == 1, [p.info.run_id for p in parents]  # created once, found again by the other process
    parent = parents[0]
    assert all(f"parent run: {parent.info.run_id}" in out for _, out, _ in results)
    assert sorted(c.data.tags["vaekit.trial"] for c in children) == ["0", "1", "2"]  # each trial ran once
    by_number = {int(c.data.tags["vaekit.trial"]): c for c in children}
    for t in done:
        run = by_number[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert float(run.data.params["loss.lambda"]) == pytest.approx(t.params["loss.lambda"])
        assert run.data.metrics["test_mse"] == pytest.approx(t.value)
        assert t.user_attrs["vaekit.run_id"] == run.info.run_id
    best = min(done, key=lambda t: t.value)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tune space"
    assert {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.")} == {
        "vaekit.version": vaekit.__version__, "vaekit.tune": "parent", "vaekit.study": "space",
        "vaekit.study.storage": str(tmp_path / "optuna.journal"), "vaekit.best_trial": str(best.number),
        "vaekit.best_run_id": by_number[best.number].info.run_id}  # docs/tune.md's "What MLflow shows"
    assert {c.data.tags["vaekit.study"] for c in children} == {"space"}
    assert parent.data.metrics["best_test_mse"] == pytest.approx(best.value)
    assert parent.data.metrics["trials_complete"] == 3
    table = client.download_artifacts(parent.info.run_id, "trials.txt", str(tmp_path))
    rows = [line.split() for line in open(table).read().splitlines()[2:]]
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(r[2] == "COMPLETE" for r in rows)
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/optimization_history.png", "plots/param_importances.png", "plots/parallel_coordinate.png"}


def test_ctrl_c_stops_the_trial_a_rerun_continues_the_study_and_a_lagging_trial_is_pruned(notebook_data, store, tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    base = ["--space", "space.toml", "--data", notebook_data, "--tracking-uri", store, "--epochs", 2, *TINY,
            "--plugin", FAULTS, "--loss", "slow-mse-kl", "--learning-rate", "0.01"]
    # 1. Each batch of the second epoch naps 8 s: Ctrl-C lands mid-training.
    proc = start_tune(*base, "--trials", 1, "--option", "loss.seconds=8", cwd=tmp_path)
    try:
        wait_for(lambda: (query_store(store, "SELECT COUNT(*) FROM metrics WHERE key = 'loss'") or [[0]])[0][0] >= 1,
                 proc=proc, what="the trial's first epoch")
        proc.send_signal(signal.SIGINT)
        rc, out, err = finish(proc, timeout=HANG)
    finally:
        proc.kill() if proc.poll() is None else None
    assert rc == 130 and "Interrupted." in err and "Traceback" not in err, err[-3000:]
    study = load_study(tmp_path / "optuna.journal")
    [stopped] = [t for t in study.trials if t.state.name == "FAIL"]
    assert stopped.user_attrs["vaekit.interrupted"] is True
    [queued] = [t for t in study.trials if t.state.name == "WAITING"]  # its settings again, for the rerun
    assert queued.user_attrs["vaekit.retry_of"] == stopped.number
    client, [parent], [child] = study_runs(store)
    assert child.info.status == "KILLED" and parent.info.status == "KILLED"

    # 2. The same command again (without the naps): the study continues with the stopped trial's settings.
    rc, out, err = finish(start_tune(*base, "--trials", 1, "--option", "loss.seconds=0", cwd=tmp_path))
    assert rc == 0, err[-3000:]
    study = load_study(tmp_path / "optuna.journal")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == stopped.params
    client, parents, children = study_runs(store)
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and client.get_run(parent.info.run_id).info.status == "FINISHED"

    # 3. One more trial, whose learning rate leaves it far behind after its first epoch: pruned there, its run FINISHED.
    t0 = time.monotonic()
    rc, out, err = finish(start_tune(*base, "--trials", 2, "--option", "loss.seconds=0", "--learning-rate", "1e-9",
                                     "--pruner-startup", 1, cwd=tmp_path))
    assert rc == 0, err[-3000:]
    study = load_study(tmp_path / "optuna.journal")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "PRUNED"], time.monotonic() - t0
    assert list(study.trials[2].intermediate_values) == [0]
    client, _, children = study_runs(store)
    pruned = next(c for c in children if c.data.tags["vaekit.trial"] == "2")
    assert pruned.info.status == "FINISHED" and pruned.data.tags["vaekit.pruned"] == "true"
    assert pruned.data.tags["vaekit.pruned_epoch"] == "1"
    assert [m.step for m in client.get_metric_history(pruned.info.run_id, "val_mse")] == [0]
    assert "test_mse" in pruned.data.metrics  # evaluated and logged like any run
    assert "PRUNED@1" in out


def test_docs_list_every_tune_flag_with_the_default_the_cli_shows():
    """docs/tune.md's flags table has a row for each flag of tune's own (run's are in docs/usage.md) showing the
    CLI's default; the CLI's --pruner-startup default is the one constant make_pruner and a trial's run use."""
    from pathlib import Path

    from vaekit.cli import run, tune
    from vaekit.studies import PRUNER_STARTUP, make_pruner

    page = (Path(__file__).resolve().parent.parent / "docs" / "tune.md").read_text()
    rows: dict[str, str] = {}
    for line in page.splitlines():
        if line.startswith("| `--"):
            rows.setdefault(line.split("`")[1].split()[0], line.replace("`", ""))
    own = [p for p in tune.params if p.name not in {q.name for q in run.params}]
    assert len(own) == 10
    for param in own:
        flag = param.opts[0]
        assert flag in rows, f"docs/tune.md has no row for {flag}"
        if param.show_default:
            assert f"[{param.default}]" in rows[flag], (flag, param.default, rows[flag])
    startup = next(p for p in own if p.name == "pruner_startup")
    assert startup.default == PRUNER_STARTUP == make_pruner("median")._n_startup_trials


def test_tpe_draws_a_quarter_of_the_study_at_random_first_3_to_10():
    from vaekit.commands.tune import make_sampler, tpe_startup

    assert [tpe_startup(n) for n in (1, 12, 16, 20, 40, 41, 1000)] == [3, 3, 4, 5, 10, 10, 10]
    assert make_sampler("tpe", [], 0, "--space", 16)._n_startup_trials == 4  # the sampler a 16-trial study gets
    assert make_sampler("tpe", [], 0, "--space", 200)._n_startup_trials == 10


def test_trials_left_running_by_a_process_gone_from_this_host_are_failed_and_queued_again(tmp_path):
    """What ``vaekit tune`` does first on a study a killed process left behind (tune.reap_stale): a trial whose
    owner on this host is gone, or whose pid now belongs to another process, fails, interrupted, its settings
    queued again; a live owner's trial, another host's and one with no owner are left running."""
    import os
    import socket

    import optuna

    from vaekit import studies, tracking
    from vaekit.commands.tune import reap_stale
    from vaekit.launcher import INTERRUPTED, OWNER_ATTR

    gone = subprocess.Popen(["sleep", "60"])
    gone_owner = {"host": socket.gethostname(), "pid": gone.pid, "start": tracking.process_start(gone.pid)}
    gone.kill()
    gone.wait()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": tracking.process_start(os.getpid())}
    owners = {"gone": gone_owner, "alive": me, "pid reused": {**me, "start": "another process"},
              "elsewhere": {**gone_owner, "host": "another-host"}, "no owner": None}
    storage = studies.open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    asked = {}
    for i, (what, who) in enumerate(owners.items()):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 10)})
        if who:
            t.set_user_attr(OWNER_ATTR, who)
        asked[what] = (t.number, t.params)
    said = []
    reap_stale(study, storage, said.append)

    by_number = {t.number: t for t in study.trials}
    states = {what: by_number[n].state.name for what, (n, _) in asked.items()}
    assert states == {"gone": "FAIL", "alive": "RUNNING", "pid reused": "FAIL", "elsewhere": "RUNNING", "no owner": "RUNNING"}
    queued = [t for t in study.trials if t.state.name == "WAITING"]
    assert sorted(t.user_attrs["vaekit.retry_of"] for t in queued) == sorted(asked[w][0] for w in ("gone", "pid reused"))
    again = [study.ask({"x": optuna.distributions.FloatDistribution(0, 10)}) for _ in queued]  # what the next trials get
    assert sorted(t.params["x"] for t in again) == sorted(asked[w][1]["x"] for w in ("gone", "pid reused"))
    assert all(by_number[asked[w][0]].user_attrs[INTERRUPTED] is True for w in ("gone", "pid reused"))
    assert sorted(said) == sorted(f"trial {asked[w][0]}: its process ({owners[w]['pid']}) is gone; marked FAIL and queued again"
                                  for w in ("gone", "pid reused"))


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_the_pruning_callback_stops_a_lagging_trial_but_never_after_its_last_epoch(pruner, store, tmp_path, monkeypatch):
    """What a trial's run does after each epoch, driven directly (no training): the pruner named in the
    environment stops a trial far behind a completed one, and lets a trial complete once its last epoch is
    trained (stopping it there would save nothing and lose a complete trial)."""
    import types

    import mlflow
    import optuna

    from vaekit import studies

    journal = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=studies.open_storage(journal))
    mlflow.set_tracking_uri(store)

    def drive(values, epochs):
        """Report ``values`` epoch by epoch through a fresh trial's callback; return what the run ended as."""
        asked = study.ask()
        env = studies.trial_env(journal, "s", asked._trial_id, pruner, startup=1, metric="val_mse")
        monkeypatch.setenv(studies.ENV_TRIAL, env[studies.ENV_TRIAL])
        [callback] = studies.callbacks()
        model = types.SimpleNamespace(stop_training=False)
        callback.set_model(model)
        callback.set_params({"epochs": epochs})
        with mlflow.start_run() as run:
            for epoch, value in enumerate(values):
                callback.on_epoch_end(epoch, {"val_mse": value, "loss": 1.0})
                if model.stop_training:
                    break
        tags = mlflow.get_run(run.info.run_id).data.tags
        pruned = tags.get(studies.PRUNED_TAG) == "true"
        study.tell(asked, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(asked, values[-1])
        return pruned, tags.get(studies.PRUNED_EPOCH_TAG), epoch + 1

    assert drive([0.10, 0.09, 0.08], epochs=3) == (False, None, 3)  # the first trial: nothing to compare with
    assert drive([5.0, 5.0, 5.0], epochs=3) == (True, "2" if pruner == "halving" else "1",
                                                 2 if pruner == "halving" else 1)
    # Far behind at its second epoch, but that is its last: not pruned, complete.
    assert drive([0.10, 5.0], epochs=2) == (False, None, 2)


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (Debian's postgresql, which .ci/run installs when missing) and
    the URL of an empty database on it.  Trust authentication: the URL's password is accepted and ignored, so a
    test can check that it is never printed."""
    import glob
    import os
    import shutil
    import tempfile
    from pathlib import Path

    initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if initdb is None:
        required("PostgreSQL", "apt-get install postgresql (.ci/run does)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        required("psycopg", "pip install -e '.[test]' (README's set-up)")
    bindir = Path(initdb).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="vaekit-pg-"))  # not tmp_path: the postgres user must reach it
    as_pg = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_pg, bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_pg, bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-o",
                    f"-p {port} -k {root} -h 127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_pg, bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "studies"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres:s3cret@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_pg, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_a_postgresql_study_as_two_machines_would(notebook_data, store, tmp_path, postgres_url):
    """The multi-machine set-up of docs/tune.md on one machine: two ``vaekit tune`` processes, the study in a real
    PostgreSQL database, the runs in one tracking store; each trial runs once, under one parent run."""
    import optuna

    (tmp_path / "space.toml").write_text(SPACE)
    args = ["--space", "space.toml", "--trials", 2, "--study", "shared", "--storage", postgres_url, "--data", notebook_data,
            "--tracking-uri", store, "--epochs", 1, *TINY]
    results = [finish(p) for p in [start_tune(*args, cwd=tmp_path) for _ in range(2)]]
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
        assert "s3cret" not in out + err and "postgresql://postgres:***@127.0.0.1" in out, out
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.number for t in done) == [0, 1], [(t.number, t.state) for t in study.trials]
    assert not (tmp_path / "optuna.journal").exists()
    client, [parent], children = study_runs(store)
    assert sorted(c.data.tags["vaekit.trial"] for c in children) == ["0", "1"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.tags["vaekit.study.storage"] == postgres_url.replace("s3cret", "***")
    assert parent.data.metrics["trials_complete"] == 2
    # The password is nowhere in the store: no param, tag or metric name of any run, no byte of the store's files
    # (the database and every artifact: trials.txt, the trials' logs and configs, plots).
    for run in [parent, *children]:
        data = run.data
        texts = [*data.params, *data.params.values(), *data.tags, *data.tags.values(), *data.metrics, run.info.run_name]
        assert not [t for t in texts if "s3cret" in t], run.info.run_id
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"mlflow.db", "trials.txt", "config.toml"} <= {p.name for p in stored}, stored
    assert [p for p in stored if b"s3cret" in p.read_bytes()] == []

