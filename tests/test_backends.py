"""The core on JAX (CPU), in real ``vaekit`` processes: train, resume, NaN stop, a plugin file, a sweep,
several devices, and models that load on the other backend.

JAX is installed by README's set-up (``.[test,jax]``); in CI (``CI`` set, as ``.ci/run`` does) a missing
JAX fails these tests rather than skipping them.  Each test starts its own processes: Keras reads its backend once
per process, and this test process runs on TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import HANG, in_process, required, run_cli
from reliability_helpers import SMALL_ARGS, first_epoch_logged, only_run, slow_run_args, start_cli, wait_for

try:
    import jax  # noqa: F401
except ImportError:
    required("JAX", "pip install -e '.[test,jax]' (README's set-up)")

JAX = ["--backend", "jax"]
#: dense VAE, 1 epoch, one sample: what JAX must do, fast.
TINY = [*SMALL_ARGS, "--epochs", "1"]


def run_id_of(res) -> str:
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.split("run id:")[1].split()[0]


@pytest.fixture(scope="module")
def jax_run(notebook_data, tmp_path_factory):
    """One tiny run on JAX through the CLI, in a process that then says whether it imported TensorFlow:
    (its stdout, tracking URI, run id).  Shared by the tests below, which only read it.  KERAS_BACKEND says
    tensorflow: ``--backend jax`` wins over it."""
    store = f"sqlite:///{tmp_path_factory.mktemp('jax-run') / 'mlflow.db'}"
    out = in_process(f"""
        import sys
        from vaekit.cli import main
        try:
            main({["run", *JAX, "--data", str(notebook_data), "--tracking-uri", store, *TINY, "--audio-every", "1"]!r})
        except SystemExit as e:
            assert e.code in (0, None), e.code
        print("TF", "tensorflow" in sys.modules)
    """, env={"KERAS_BACKEND": "tensorflow"})
    return out, store, only_run(store).info.run_id


def test_a_jax_run_trains_logs_its_backend_and_imports_no_tensorflow(jax_run, tmp_path):
    import jax
    import mlflow

    out, store, _ = jax_run
    assert "TF False" in out
    run = only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.params["backend"] == "jax" and run.data.params["backend.version"] == jax.__version__
    assert run.data.tags["vaekit.backend"] == "jax"
    # The run's config carries the resolved backend: resume reads it from config.toml, and the logged models
    # pin the backend the run trained on (not whatever Keras would be asked for after).
    client = MlflowClient(store)
    saved = client.download_artifacts(run.info.run_id, "config.toml", str(tmp_path))
    assert 'backend = "jax"' in open(saved).read().splitlines()
    for tag in ("vaekit.model_uri", "vaekit.generator_uri"):
        logged = client.get_logged_model(run.data.tags[tag].removeprefix("models:/"))
        requirements = mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/requirements.txt",
                                                           dst_path=str(tmp_path / tag))
        pinned = open(requirements).read().split()
        assert f"jax=={jax.__version__}" in pinned and not any(p.startswith("tensorflow") for p in pinned), pinned
    assert {"loss", "mse", "kl", "val_loss", "test_loss", "test_mse", "test_kl"} <= set(run.data.metrics)
    assert np.isfinite(run.data.metrics["test_loss"])
    # --audio-every reads the trained weights at the epoch's end on JAX too: after the one epoch, the same sample.
    import soundfile as sf

    after_epoch, _ = sf.read(client.download_artifacts(run.info.run_id, "epochs/001/sample_00.wav", str(tmp_path / "a")))
    final, _ = sf.read(client.download_artifacts(run.info.run_id, "samples/sample_00.wav", str(tmp_path / "b")))
    np.testing.assert_allclose(after_epoch, final, atol=1e-4)  # XLA rounds a batch of 2 and of 1 apart: a 16-bit step


def test_the_backend_is_resolved_in_one_place_carried_by_the_config_and_read_from_it(monkeypatch):
    """--backend (or a config's ``backend``), else KERAS_BACKEND, else tensorflow; RunConfig.with_backend makes
    it concrete, and training decides by that name, not by asking Keras (this process's Keras runs TensorFlow)."""
    import keras

    from vaekit import backend, training
    from vaekit.config import RunConfig, build_config
    from vaekit.errors import ConfigError

    assert keras.backend.backend() == "tensorflow"
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert backend.resolve(None) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.resolve(None) == "jax" and backend.resolve("torch") == "torch"
    with pytest.raises(ConfigError, match=r"^--backend 'theano': expected one of tensorflow, jax, torch$"):
        build_config(backend="theano")
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(ConfigError, match=r"^KERAS_BACKEND 'theano': expected one of tensorflow, jax, torch$"):
        build_config()
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    config = RunConfig()
    assert config.backend is None and config.with_backend().backend == "tensorflow"
    with pytest.raises(ConfigError, match="^--backend jax: Keras was already imported with the tensorflow backend"):
        RunConfig(backend="jax").with_backend()

    x = np.zeros((10, 4, 4), np.float32)
    assert isinstance(training.batches(x, training.EpochOrder(10, 0, 0), 4, "jax"), training.EpochBatches)
    assert not isinstance(training.batches(x, training.EpochOrder(10, 0, 0), 4, "tensorflow"), training.EpochBatches)
    with pytest.raises(ValueError, match="resolve it first"):
        training.build(config, None, None, None)


def test_models_load_on_the_other_backend_with_the_same_weights(jax_run, notebook_data, store, tmp_path):
    runs = {"jax": (jax_run[2], jax_run[1]),
            "tensorflow": (run_id_of(run_cli("run", "--backend", "tensorflow", "--data", notebook_data, "--tracking-uri",
                                             store, *TINY, cwd=tmp_path)), store)}
    decoded = {}
    for loader in ("jax", "tensorflow"):  # one process per backend loads both runs' models
        out = tmp_path / f"on-{loader}.npz"
        # On TensorFlow, the same process then generates from the JAX run through the CLI.
        generate = ["generate", runs["jax"][0], "-n", "1", "--backend", "tensorflow", "--no-log", "--out",
                    str(tmp_path / "gen"), "--tracking-uri", runs["jax"][1], "--option", "vocoder.n_iter=2"]
        in_process(f"""
            import numpy as np
            from vaekit import backend
            backend.select({loader!r})
            from vaekit.logged import open_run
            from vaekit.model import sample_latent
            import keras
            assert keras.backend.backend() == {loader!r}
            z = sample_latent(3, 4, 7)
            np.savez({str(out)!r}, **{{b: open_run(*ref).model.decode(z) for b, ref in {runs!r}.items()}})
            if {loader == "tensorflow"!r}:
                from vaekit.cli import main
                try:
                    main({generate!r})
                except SystemExit as e:
                    assert e.code in (0, None), e.code
        """)
        with np.load(out) as npz:
            decoded.update({(trained, loader): npz[trained] for trained in runs})
    for trained in runs:
        np.testing.assert_allclose(decoded[trained, "jax"], decoded[trained, "tensorflow"], atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "gen").rglob("*.wav")) == ["sample_00.wav"]


def test_sigterm_then_resume_on_jax_continues_the_run_and_matches_an_uninterrupted_jax_run(notebook_data, store, tmp_path):
    """What tests/test_resume.py checks on TensorFlow: the resumed run continues from its checkpoint (the
    epochs trained and the optimizer's step count in it, the resumed-from tag, each epoch logged once), and
    its every epoch matches an uninterrupted run's (a fresh run with the same seed matches only at the end)."""
    import math

    from vaekit.checkpoint import load

    args = slow_run_args(notebook_data, store, 3)
    proc = start_cli(*args, *JAX, "--checkpoint-interval", "0", cwd=tmp_path)
    try:
        run_id = wait_for(first_epoch_logged(store), proc=proc, what="the first epoch's metrics")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=HANG)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 143
    client = MlflowClient(store)
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    kept = sorted(m.step for m in client.get_metric_history(run_id, "loss"))
    assert kept and kept == list(range(len(kept))) and len(kept) < 3
    ckpt = load(run_id, store)
    params = killed.data.params
    n_fit = int(params["data.train"]) - round(int(params["data.train"]) * float(params["validation_split"]))
    batches = math.ceil(n_fit / int(params["batch_size"]))
    assert ckpt.epoch == len(kept) and int(ckpt.optimizer_arrays[0]) == ckpt.epoch * batches  # Adam's step count

    res = run_cli("run", "--resume", run_id, "--tracking-uri", store, "--quiet", "--plugin", args[args.index("--plugin") + 1],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.params["backend"] == "jax"
    assert resumed.data.tags["vaekit.resumed_from_epoch"] == str(ckpt.epoch)
    # The same run, uninterrupted, in another store.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    # Without the naps (slow-mse-kl computes what mse-kl does): nothing here needs the run slow.
    full = run_id_of(run_cli(*[other if a == store else a for a in args], *JAX, "--option", "loss.seconds=0", cwd=tmp_path))
    whole = MlflowClient(other)
    for key in ("loss", "val_loss", "kl"):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        want = sorted((m.step, m.value) for m in whole.get_metric_history(full, key))
        assert [s for s, _ in got] == [0, 1, 2], key  # every epoch exactly once, at its own step
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-4, err_msg=key)
    for key in ("test_loss", "test_mse", "test_kl"):
        assert resumed.data.metrics[key] == pytest.approx(whole.get_run(full).data.metrics[key], rel=1e-4), key


def test_nan_stop_on_jax_names_epoch_and_batch(notebook_data, store, tmp_path):
    res = run_cli("run", *JAX, "--data", notebook_data, "--tracking-uri", store, *TINY, "--learning-rate", "1e9",
                  cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    [line] = [x for x in res.stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith("Error: the loss became ") and "at epoch 1, batch " in line, line
    assert only_run(store).info.status == "FAILED"


PLUGIN = '''
    import vaekit


    def build(input_shape, latent_dim, units=16):
        """A one-layer encoder from a plugin file."""
        import keras

        inputs = keras.Input(shape=tuple(input_shape))
        h = keras.layers.Dense(units, activation="relu")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)])


    @vaekit.hookimpl
    def register_encoders(register):
        register("file-enc", build)
'''


def test_a_plugin_file_and_a_sweep_on_jax(notebook_data, store, tmp_path):
    plugin = tmp_path / "enc.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    res = run_cli("sweep", *JAX, "--grid", "latent_dim=2", "--plugin", plugin, "--data", notebook_data,
                  "--tracking-uri", store, *TINY, "--encoder", "file-enc", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "vaekit.sweep.point" in r.data.tags]
    assert sorted(r.data.params["latent_dim"] for r in children) == ["2"]  # one child: the sweep's code is backend-free
    for r in children:
        assert r.info.status == "FINISHED" and r.data.params["backend"] == "jax"
        assert r.data.params["encoder"] == "file-enc" and json.loads(r.data.tags["vaekit.plugin_files"]) == [str(plugin)]


def test_mirrored_on_two_jax_cpu_devices_with_a_loss_that_follows_the_epoch(notebook_data, store, tmp_path):
    """DataParallel over two CPU devices; kl-warmup's β reads the epoch, a variable set between epochs:
    on JAX it must be state of the compiled step, not a constant traced into it."""
    res = run_cli("run", *JAX, "--strategy", "mirrored", "--data", notebook_data, "--tracking-uri", store, *SMALL_ARGS,
                  "--epochs", "2", "--loss", "kl-warmup", cwd=tmp_path,
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    client = MlflowClient(store)
    run = client.get_run(run_id_of(res))
    assert run.data.params["distribute.replicas"] == "2" and run.data.params["distribute.strategy"] == "DataParallel"
    assert np.isfinite(run.data.metrics["test_loss"])
    beta = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "beta")]
    assert sorted(beta) == [(0, 0.0), (1, pytest.approx(0.2))]


def test_torch_refuses_strategies_and_a_missing_backend_names_its_extra(notebook_data, store, tmp_path):
    res = run_cli("run", "--backend", "torch", "--strategy", "mirrored", "--data", notebook_data, "--tracking-uri", store,
                  cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert ("Error: --strategy mirrored: the torch backend trains on one device; use --backend tensorflow or jax "
            "for several") in res.stderr.splitlines()
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        res = run_cli("run", "--backend", "torch", "--data", notebook_data, "--tracking-uri", store, cwd=tmp_path)
        assert res.returncode == 2
        assert ('Error: --backend torch: torch is not installed; install it with pip install -e ".[torch]"'
                in res.stderr.splitlines()), res.stderr


def test_a_torch_run_where_torch_is_installed(notebook_data, store, tmp_path):
    """PyTorch is supported where it is installed; README's set-up does not install it (its CPU build is
    not what `pip install torch` picks on every machine), so this runs only where it is."""
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[torch]'")
    run = MlflowClient(store).get_run(run_id_of(run_cli("run", "--backend", "torch", "--data", notebook_data,
                                                        "--tracking-uri", store, *TINY, cwd=tmp_path)))
    assert run.info.status == "FINISHED" and run.data.params["backend"] == "torch"
    assert np.isfinite(run.data.metrics["test_loss"])


def test_multiworker_on_jax_two_processes_on_this_machine(notebook_data, store, tmp_path):
    """keras.distribution.initialize from KERAS_DISTRIBUTION_* (Gloo between two CPU processes): one
    global batch fed in halves, DataParallel over both processes' devices; only process 0 logs."""
    from conftest import free_port

    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "vaekit", "run", *JAX, "--strategy", "multiworker", "--data", str(notebook_data),
         "--tracking-uri", store, *TINY, "--epochs", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_DISTRIBUTION_JOB_ADDRESSES": addresses,
                        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(i)})
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    run = only_run(store)  # process 1 logged to a throw-away store of its own
    assert run.data.params["distribute.replicas"] == "2" and run.data.params["distribute.strategy"] == "DataParallel"
    assert [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert "vaekit-worker-" in outs[1][0]
