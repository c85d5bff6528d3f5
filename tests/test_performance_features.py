"""Performance features: the fast vocoder, precision/XLA/strategy settings, a cheap NaN check, fast start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import make_tones, run_cli, tiny_config
from vaekit.audio import AudioParams, mel_basis, mel_error_db, waveforms_to_mel_db
from vaekit.components import get_component
from vaekit.config import RunConfig, build_config
from vaekit.errors import ConfigError, TrainingError


@pytest.fixture(scope="module")
def mel_db():
    audio = AudioParams()
    return waveforms_to_mel_db(make_tones(3, audio, seed=3), audio)


def test_batched_griffin_lim_is_librosas_algorithm(mel_db):
    import librosa

    from vaekit.default_plugins.fastgl import BatchedGriffinLim

    audio = AudioParams()
    mag = np.abs(librosa.stft(librosa.istft(np.ones((2, 1025, 50), np.complex64), hop_length=442, length=audio.samples) +
                              make_tones(2, audio, seed=1), n_fft=2048, hop_length=442)).astype(np.float32)
    ours = BatchedGriffinLim(audio.n_fft, audio.hop_length, audio.samples)(mag, n_iter=4, momentum=0.99, random_state=7)
    theirs = np.stack([librosa.griffinlim(m, n_iter=4, hop_length=442, n_fft=2048, momentum=0.99,
                                          length=audio.samples, random_state=7) for m in mag])
    assert ours.shape == theirs.shape == (2, audio.samples)
    np.testing.assert_allclose(ours, theirs, atol=1e-3 * np.abs(theirs).max())


def test_batched_nnls_beats_the_clipped_pseudo_inverse(mel_db):
    import librosa

    from vaekit.default_plugins.fastgl import nnls_mel_to_power

    basis = mel_basis(AudioParams())
    power = librosa.db_to_power(mel_db)
    start, solved = nnls_mel_to_power(power, basis, 0), nnls_mel_to_power(power, basis, 40)
    assert solved.shape == (3, 1025, 50) and (solved >= 0).all()
    residual = lambda x: np.linalg.norm(np.einsum("mf,nft->nmt", basis, x) - power)  # noqa: E731
    assert residual(solved) < 0.5 * residual(start)
    # Batched = per clip: the clips do not mix.
    np.testing.assert_allclose(nnls_mel_to_power(power[1:2], basis, 40)[0], solved[1], rtol=1e-4, atol=1e-6 * solved.max())


#: How far fastgl's audio (peak ~1.7 here) may move when nothing but float32 rounding changes: another
#: CPU's BLAS/FFT kernels, another batch shape.  Griffin-Lim's 32 momentum-0.99 iterations amplify
#: rounding: nudging 1 % (or all) of the input mel values by one ulp moved the output by up to
#: 8.1e-4 (1.3e-3) on an AMD EPYC; the old batched warm start under OpenBLAS's Haswell kernels
#: (AVX2, no AVX-512) moved it by 3.8e-4 between batch_size=1 and one batch.  Four times the largest.
ROUNDING_ATOL = 5e-3
#: ... and the mel error (what the vocoder is judged by) by at most this (seen: under 1e-4 dB).
ROUNDING_MEL_DB = 0.01


def test_fastgl_is_no_worse_than_the_notebooks_inversion(mel_db):
    """What a user relies on, on any CPU: seeded, at least as good as the notebook's inversion, and
    batch_size (a memory knob) does not change the sound beyond float32 rounding."""
    audio = AudioParams()
    fast = get_component("vocoder", "fastgl").create(audio)
    slow = get_component("vocoder", "griffinlim").create(audio)  # the notebook's mel_to_audio, seeded
    mel_db = mel_db[:2]
    out = fast(mel_db)
    assert out.shape == (2, audio.samples) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, fast(mel_db))  # seeded: the same call on the same machine
    error = mel_error_db(out, mel_db, audio)
    assert error <= mel_error_db(slow(mel_db), mel_db, audio)
    blocked = get_component("vocoder", "fastgl").create(audio, batch_size=1)(mel_db)
    np.testing.assert_allclose(blocked, out, rtol=0, atol=ROUNDING_ATOL)
    assert abs(mel_error_db(blocked, mel_db, audio) - error) <= ROUNDING_MEL_DB


def _forced_openblas_haswell_problem() -> str | None:
    """Why NumPy cannot be run with OpenBLAS's Haswell kernels forced here, else None."""
    import platform

    from threadpoolctl import threadpool_info

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"OpenBLAS's Haswell kernels are x86-64 code; this is {platform.machine()}"
    if not Path("/proc/cpuinfo").exists():
        return "no /proc/cpuinfo to tell whether this CPU has the AVX2/FMA the Haswell kernels need"
    if not {"avx2", "fma"} <= set(Path("/proc/cpuinfo").read_text().split()):
        return "this CPU has no AVX2/FMA, which the Haswell kernels need"
    if not any(i.get("internal_api") == "openblas" for i in threadpool_info()):
        return "NumPy's BLAS is not OpenBLAS (OPENBLAS_CORETYPE would choose nothing)"
    return None


def test_fastgl_audio_does_not_depend_on_the_batch_it_is_in_with_other_blas_kernels():
    """The batched path is batch-invariant by construction (the NNLS warm start is one product of the
    same shape per clip), so the same machine gives a clip the same audio whatever its batch.  Checked
    with OpenBLAS's Haswell kernels forced, as on an AVX2 machine without AVX-512: there one product
    for the whole batch rounded differently by batch shape (issue 16 saw 3.8e-4 on an AMD EPYC)."""
    why = _forced_openblas_haswell_problem()
    if why:
        pytest.skip(why)
    code = ("import sys, numpy as np\nfrom threadpoolctl import threadpool_info\n"
            "sys.path.insert(0, 'tests')\nfrom conftest import make_tones\n"
            "from vaekit.audio import AudioParams, waveforms_to_mel_db\n"
            "from vaekit.components import get_component\n"
            "audio = AudioParams()\nmel_db = waveforms_to_mel_db(make_tones(3, audio, seed=3), audio)\n"
            "make = lambda **o: get_component('vocoder', 'fastgl').create(audio, n_iter=4, **o)\n"
            "whole, one, two = make()(mel_db), make(batch_size=1)(mel_db), make(batch_size=2)(mel_db)\n"
            "print(sorted({i.get('architecture') for i in threadpool_info() if i.get('internal_api') == 'openblas'}))\n"
            "print(float(np.abs(one - whole).max()), float(np.abs(two - whole).max()))\n")
    root = Path(__file__).parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                         env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"})
    assert res.returncode == 0, res.stderr[-3000:]
    kernels, diffs = res.stdout.strip().splitlines()[-2:]
    if "Haswell" not in kernels:
        pytest.skip(f"OPENBLAS_CORETYPE=Haswell was not taken up (kernels: {kernels})")
    assert diffs == "0.0 0.0", f"max difference from one batch with batch_size=1, 2: {diffs}"


def test_performance_settings_are_checked(tmp_path):
    from vaekit.distribute import compile_options

    assert build_config(precision="mixed_bfloat16", jit_compile=False, strategy="mirrored").strategy == "mirrored"
    with pytest.raises(ConfigError, match="--precision 'fp8': expected one of float32, mixed_float16, mixed_bfloat16"):
        RunConfig(precision="fp8").validate()
    cfg = tmp_path / "c.toml"
    cfg.write_text('strategy = "ring"\n')
    with pytest.raises(ConfigError, match="--strategy 'ring'"):
        build_config(cfg)
    import keras

    opts = compile_options(RunConfig(precision="mixed_float16"))
    assert isinstance(opts["optimizer"], keras.optimizers.LossScaleOptimizer) and opts["jit_compile"] == "auto"
    assert compile_options(RunConfig(jit_compile=True))["jit_compile"] is True


def test_multiworker_needs_a_well_formed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG: expected JSON"):
        RunConfig(strategy="multiworker").validate()
    from vaekit.distribute import is_chief

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}))
    assert not is_chief("multiworker", "tensorflow") and is_chief("mirrored", "tensorflow")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}))
    assert is_chief("multiworker", "tensorflow")


def test_multi_process_jax_reads_keras_distribution_variables(monkeypatch):
    from vaekit.distribute import is_chief, process

    assert process("multiworker", "jax") == (0, 1)  # no cluster: one process
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert process("multiworker", "jax") == (1, 2) and not is_chief("multiworker", "jax")
    assert is_chief("mirrored", "jax")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "2")
    with pytest.raises(ConfigError, match="KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID: expected"):
        RunConfig(strategy="multiworker", backend="jax").validate()


@pytest.fixture(scope="module")
def float32_run(notebook_data, tmp_path_factory):
    """One ordinary single-device run, the reference for the precision and strategy runs."""
    from vaekit.commands.run import run
    from vaekit.tracking import check_store

    where = tmp_path_factory.mktemp("ref")
    store = f"sqlite:///{where / 'mlflow.db'}"
    check_store(store, "vaekit", (where / "mlruns").as_uri())  # artifacts in tmp, not ./mlruns of the cwd
    return run(tiny_config(notebook_data, store, samples=0, validation_split=0.0), progress=False)


def test_mixed_bfloat16_keeps_test_mse(notebook_data, store, float32_run):
    import keras

    from vaekit.commands.run import run

    result = run(tiny_config(notebook_data, store, samples=1, validation_split=0.0, precision="mixed_bfloat16",
                             vocoder="fastgl"), progress=False)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    r = MlflowClient(store).get_run(result.run_id)
    assert r.info.status == "FINISHED" and r.data.params["precision"] == "mixed_bfloat16"
    # The model trained and logged under the policy: its layers compute in bfloat16 and keep float32
    # weights (the param above is only the config, copied).
    from vaekit.logged import load_model

    model = load_model(result.run_id, "FINISHED")
    weighted = [layer for part in (model.encoder, model.decoder) for layer in part.layers if layer.weights]
    assert len(weighted) >= 4
    assert {(layer.dtype_policy.name, layer.compute_dtype) for layer in weighted} == {("mixed_bfloat16", "bfloat16")}
    assert {w.dtype for layer in weighted for w in layer.weights} == {"float32"}
    ref = float32_run.metrics
    assert result.metrics["test_mse"] == pytest.approx(ref["test_mse"], rel=0.05)
    assert result.metrics["test_loss"] == pytest.approx(500 * result.metrics["test_mse"] + result.metrics["test_kl"], rel=1e-3)


def test_steps_per_execution_trains_the_same_batches(notebook_data, store, float32_run):
    from vaekit.commands.run import run

    with pytest.raises(ConfigError, match="--steps-per-execution must be at least 1, got 0"):
        RunConfig(steps_per_execution=0).validate()
    # 96 clips, batch 32: 3 steps an epoch, 2 per compiled call; the second call must stop at the
    # epoch's end (an endless batch stream made it train a 4th batch, from the next epoch's order).
    result = run(tiny_config(notebook_data, store, samples=0, validation_split=0.0, steps_per_execution=2), progress=False)
    assert MlflowClient(store).get_run(result.run_id).data.params["steps_per_execution"] == "2"
    for key in ("test_loss", "test_mse", "test_kl"):
        assert result.metrics[key] == pytest.approx(float32_run.metrics[key], rel=1e-4), key


def test_mirrored_strategy_on_two_cpu_devices_matches_one_device(notebook_data, store, tmp_path, float32_run):
    res = run_cli("run", "--data", notebook_data, "--tracking-uri", store, "--epochs", "1", "--batch-size", "32",
                  "--samples", "0", "--validation-split", "0", "--strategy", "mirrored", "--quiet",
                  cwd=tmp_path, env={"VAEKIT_CPU_DEVICES": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    run_id = res.stdout.split("run id:")[1].split()[0]
    r = MlflowClient(store).get_run(run_id)
    assert r.data.params["distribute.replicas"] == "2" and r.data.params["distribute.strategy"] == "MirroredStrategy"
    assert r.data.params["batch_size"] == "32"  # global
    ref = float32_run.metrics
    assert r.data.metrics["test_mse"] == pytest.approx(ref["test_mse"], rel=0.05)
    assert r.data.metrics["test_kl"] == pytest.approx(ref["test_kl"], rel=0.5, abs=0.05)


def test_non_finite_loss_stops_training_naming_epoch_and_batch(notebook_data, store, tmp_path):
    from vaekit.commands.run import run
    from vaekit.plugins import load_plugin_file

    plugin = tmp_path / "nanloss.py"
    plugin.write_text(
        "import vaekit\n"
        "def build():\n"
        "    def loss(x, x_hat, z_mean, z_log_var):\n"
        "        from keras import ops\n"
        "        mse = ops.mean(ops.square(x - x_hat))\n"
        "        return {'loss': mse * ops.log(mse - 10.0), 'mse': mse}\n"  # log of a negative: NaN
        "    return loss\n"
        "@vaekit.hookimpl\n"
        "def register_losses(register):\n"
        "    register('nanloss', build)\n")
    load_plugin_file(plugin)
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 1, batch 1;"):
        run(tiny_config(notebook_data, store, loss="nanloss", samples=0), progress=False)
    runs = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("vaekit").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_multiworker_strategy_with_two_local_workers(notebook_data, store, tmp_path, float32_run):
    """Two `vaekit run --strategy multiworker` processes on localhost, as on two machines: they train
    together, the chief (worker 0) logs to the store, the other worker to a throw-away one."""
    import os
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vaekit", "run", "--data", str(notebook_data), "--tracking-uri", store,
             "--epochs", "1", "--batch-size", "32", "--samples", "0", "--validation-split", "0",
             "--strategy", "multiworker", "--quiet"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("vaekit").experiment_id])
    assert len(runs) == 1, "only the chief logs to the store"
    r = runs[0]
    assert r.info.run_id in outs[0][0] and r.info.status == "FINISHED"
    assert r.data.params["distribute.strategy"] == "MultiWorkerMirroredStrategy"
    assert r.data.params["distribute.replicas"] == "2"
    # Both workers hold the same model, so they report the same test metrics; close to one device's.
    assert outs[0][0].split("test MSE:")[1].split()[0] == outs[1][0].split("test MSE:")[1].split()[0]
    assert r.data.metrics["test_mse"] == pytest.approx(float32_run.metrics["test_mse"], rel=0.05)
