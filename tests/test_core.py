"""The core path: the notebook's model, loss and vocoder; `vaekit run` logged to a real MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import docs_page, run_cli, tiny_config
from vaekit.audio import AudioParams
from vaekit.components import get_component
from vaekit.errors import PluginError


def test_conv2_parameter_counts_match_the_notebook():
    enc = get_component("encoder", "conv2").create((50, 50, 1), 20)
    dec = get_component("decoder", "conv2").create(20, (50, 50, 1))
    assert enc.count_params() == 2_480_725
    assert dec.count_params() == 2_482_486
    assert enc.count_params() + dec.count_params() == 4_963_211
    assert [tuple(o.shape) for o in enc.outputs] == [(None, 20), (None, 20)]
    assert tuple(dec.outputs[0].shape) == (None, 50, 50, 1)


def test_conv2_takes_any_size_from_10_padding_only_where_the_notebooks_model_cannot_mirror():
    """Sizes n ≡ 2 (mod 4) are the notebook's model layer for layer; others are padded, then cropped back."""
    import keras

    enc = get_component("encoder", "conv2").create((42, 62, 1), 8)
    dec = get_component("decoder", "conv2").create(8, (42, 62, 1))
    assert tuple(dec.outputs[0].shape) == (None, 42, 62, 1)
    assert [tuple(o.shape) for o in enc.outputs] == [(None, 8), (None, 8)]
    assert not any(isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D))
                   for layer in enc.layers + dec.layers)
    for shape, padded in (((128, 87, 1), (130, 90)), ((80, 44, 1), (82, 46)), ((64, 50, 1), (66, 50))):
        enc = get_component("encoder", "conv2").create(shape, 8)
        dec = get_component("decoder", "conv2").create(8, shape)
        assert tuple(enc.get_layer("pad").output.shape[1:3]) == padded
        assert tuple(dec.get_layer("crop").input.shape[1:3]) == padded
        assert tuple(dec.outputs[0].shape) == (None, *shape)
        x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
        assert [tuple(o.shape) for o in enc(x)] == [(2, 8), (2, 8)]
    with pytest.raises(PluginError, match=r"^conv2 needs spectrograms of at least 10×10 \(mel bands × frames\), got 9×50$"):
        get_component("encoder", "conv2").create((9, 50, 1), 20)


def test_mse_kl_matches_the_notebook_reductions():
    rng = np.random.default_rng(0)
    x = rng.random((4, 50, 50, 1)).astype("float32")
    x_hat = rng.random((4, 50, 50, 1)).astype("float32")
    mu = rng.standard_normal((4, 20)).astype("float32")
    lv = rng.standard_normal((4, 20)).astype("float32")
    terms = get_component("loss", "mse-kl").create()(x, x_hat, mu, lv)
    mse = np.mean((x - x_hat) ** 2)
    # The notebook: (mean μ² + mean exp(lv) − mean lv − 1) / 2.
    kl = (np.mean(mu**2) + np.mean(np.exp(lv)) - np.mean(lv) - 1) / 2
    assert float(terms["mse"]) == pytest.approx(mse, rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(500 * mse + kl, rel=1e-5)
    terms = get_component("loss", "mse-kl").create(**{"lambda": 1000})(x, x_hat, mu, lv)
    assert float(terms["loss"]) == pytest.approx(1000 * mse + kl, rel=1e-5)


def test_griffinlim_reproduces_librosa_mel_to_audio(notebook_data):
    """Same method as the notebook's mel_to_audio call (which draws an unseeded random phase), so
    both invert the same spectrograms equally well; ours is seeded and so repeatable."""
    import librosa

    from vaekit.audio import mel_error_db

    audio = AudioParams()
    x = np.load(notebook_data / "x_test.npy")[:3]
    mel_db = x * (np.load(notebook_data / "max_values.npy") - np.load(notebook_data / "min_values.npy")) + np.load(
        notebook_data / "min_values.npy")
    vocoder = get_component("vocoder", "griffinlim").create(audio)
    out = vocoder(mel_db)
    assert out.shape == (3, audio.samples) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:1], vocoder(mel_db[:1]))  # repeatable, whatever else is in the batch
    ref = np.stack([librosa.feature.inverse.mel_to_audio(librosa.db_to_power(m), sr=22050, hop_length=442,
                                                         length=audio.samples) for m in mel_db])
    ours, theirs = mel_error_db(out, mel_db, audio), mel_error_db(ref, mel_db, audio)
    assert ours == pytest.approx(theirs, rel=0.1), (ours, theirs)
    assert np.std(out) == pytest.approx(np.std(ref), rel=0.1)


def test_run_logs_params_metrics_artifacts_and_a_loadable_model(notebook_run):
    import mlflow

    run_id, store = notebook_run  # the notebook's defaults, 2 epochs, 2 samples
    client = MlflowClient(store)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED"
    p = r.data.params
    assert p["encoder"] == "conv2" and p["decoder"] == "conv2" and p["loss"] == "mse-kl" and p["vocoder"] == "griffinlim"
    assert p["loss.lambda"] == "500.0" and p["latent_dim"] == "20" and p["batch_size"] == "32"
    assert p["encoder.plugin"] == "vaekit.default_plugins.conv2" and p["vocoder.n_iter"] == "4"
    assert p["audio.hop_length"] == "442" and p["audio.sr"] == "22050"
    assert r.data.tags["vaekit.version"]
    for key in ("loss", "mse", "kl", "val_loss", "val_mse", "val_kl"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [0, 1], key
        assert all(np.isfinite(m.value) for m in history)
    m = r.data.metrics
    for key in ("test_loss", "test_mse", "test_kl", "train_seconds", "train_samples_per_s"):
        assert np.isfinite(m[key]) and m[key] >= 0, key
    assert m["test_loss"] == pytest.approx(500 * m["test_mse"] + m["test_kl"], rel=1e-3)
    files = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert files == {"samples/sample_00.wav", "samples/sample_00.png", "samples/sample_01.wav", "samples/sample_01.png"}
    assert {a.path for a in client.list_artifacts(run_id)} >= {"config.toml", "audio.json", "samples"}

    import soundfile as sf

    wav = client.download_artifacts(run_id, "samples/sample_00.wav")
    y, sr = sf.read(wav)
    assert sr == 22050 and y.shape == (22050,) and np.abs(y).max() > 0

    import vaekit.model  # noqa: F401  registers the custom classes

    mlflow.set_tracking_uri(store)
    uri = client.get_run(run_id).data.tags["vaekit.model_uri"]  # the logged model, MLflow 3's way
    assert uri.startswith("models:/m-")
    model = mlflow.keras.load_model(uri)
    x_hat = model.decode(np.zeros((3, 20), dtype="float32"))
    assert x_hat.shape == (3, 50, 50, 1) and np.isfinite(x_hat).all()


def test_cli_run_with_flags_options_and_config(notebook_data, store, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('epochs = 3\nlatent_dim = 8\nsamples = 1\n[options.loss]\nlambda = 100\n[options.vocoder]\nn_iter = 4\n')
    res = run_cli("run", "--data", notebook_data, "--encoder", "conv2", "--vocoder", "griffinlim", "--config", cfg,
                  "--epochs", "1", "--option", "loss.lambda=1000", "--tracking-uri", store, "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "run id:" in res.stdout and "test MSE:" in res.stdout and "test KL:" in res.stdout
    # Plain .npy data holds no audio: the metrics against the original audio are skipped, in one line saying why.
    assert (f"skipped:   test_audio_mel_db, test_audio_stft_db: {notebook_data}: the data holds spectrograms only "
            "(no dataset.json), so the original audio is not known\n") in res.stdout
    assert "vaekit ui" in res.stdout and "samples/" in res.stdout
    run_id = res.stdout.split("run id:")[1].split()[0]
    p = MlflowClient(store).get_run(run_id).data.params
    assert p["epochs"] == "1" and p["latent_dim"] == "8" and p["loss.lambda"] == "1000.0"


def test_settings_that_cannot_work_are_refused_with_the_flag_named():
    from vaekit.config import build_config
    from vaekit.errors import ConfigError

    for flags, message in ((dict(epochs=float("inf")), "--epochs: expected int, got inf"),
                           (dict(learning_rate=float("nan")), "--learning-rate: expected float, got nan"),
                           (dict(jit_compile="false"), "jit_compile: expected true or false"),
                           (dict(checkpoint_interval=-1), r"--checkpoint-interval must be 0 or more \(seconds\), got -1")):
        with pytest.raises(ConfigError, match=message):
            build_config(**flags)


def test_validation_split_never_leaves_training_empty():
    from vaekit.training import split_validation

    x = np.arange(3 * 4, dtype="float32").reshape(3, 2, 2)
    train, val = split_validation(x, 0.9, seed=0)
    assert len(train) == 1 and len(val) == 2
    assert sorted(np.concatenate([train, val])[:, 0, 0]) == [0.0, 4.0, 8.0]


def test_a_deleted_experiment_is_a_one_line_error_before_training(notebook_data, store):
    from vaekit.commands.run import run
    from vaekit.errors import VaekitError

    client = MlflowClient(store)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(VaekitError, match=r"--experiment gone: deleted in .*mlflow experiments restore"):
        run(tiny_config(notebook_data, store, experiment="gone"), progress=False)
    assert client.search_runs([client.get_experiment_by_name("gone").experiment_id], run_view_type=3) == []


def documented_logged_keys() -> dict[str, list[str]]:
    """docs/logged.md, "What every run logs to MLflow": the backticked keys of each bullet, by bullet."""
    import re

    section = docs_page("logged.md").split("# What every run logs to MLflow", 1)[1].split("\n## ", 1)[0]
    out = {}
    bullets = section[section.index("\n- "):].split("\n\n", 1)[0]  # the list ends at the first blank line
    for bullet in re.split(r"\n- ", bullets)[1:]:
        what = re.match(r"\*\*([a-z ]+)\*\*", bullet).group(1)
        out[what] = re.findall(r"`([^`]+)`", bullet)
    return out


def test_a_run_logs_exactly_the_keys_the_docs_list(notebook_run):
    """Every key a tiny run logged is in docs/logged.md's list, and every key it lists (bar those it says
    are logged only by some runs) was logged."""
    import re
    from dataclasses import fields

    from vaekit import kinds
    from vaekit.config import RunConfig

    run_id, store = notebook_run
    client = MlflowClient(store)
    logged = client.get_run(run_id)

    def artifacts(path=None):
        for f in client.list_artifacts(run_id, path):
            yield from (artifacts(f.path) if f.is_dir else [f.path])

    models = client.search_logged_models(experiment_ids=[logged.info.experiment_id])
    got = {"params": set(logged.data.params), "metrics": set(logged.data.metrics),
           "tags": {t for t in logged.data.tags if not t.startswith("mlflow.")},
           "artifacts": set(artifacts()), "logged model": {m.name for m in models if m.source_run_id == run_id},
           "inputs": {t.value for d in logged.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}}
    placeholders = {
        "SETTING": "|".join(f.name for f in fields(RunConfig) if f.name not in ("options", "tracking_uri")),
        "KIND": "|".join(kinds.names()), "OPTION": r"[\w-]+", "TERM": "loss|mse|kl", "NNN": r"\d\d\d", "NN": r"\d\d",
        "AUDIO": "|".join(AudioParams().to_dict()),
    }
    only_some_runs = {"vaekit.plugin_files", "vaekit.closed", "vaekit.sweep.parent", "vaekit.sweep.point", "mlflow.parentRunId",
                      "vaekit.trial", "vaekit.study", "vaekit.pruned", "vaekit.pruned_epoch",
                      "vaekit.resumed_from_epoch", "vaekit.error", "mlflow.*", "checkpoints/slotN/state.npz",
                      "checkpoints/slotN/state.json", "error/traceback.txt", "system/*",
                      "best_epoch", "stopped_epoch",
                      # Against the original audio: plain .npy data (this run's) has none; the tag says so.
                      "test_audio_mel_db", "test_audio_stft_db",
                      # --audio-every (tests/test_audio_every.py checks what such a run logs against the same list)
                      "epochs/NNN/reconstruction_NN.wav", "epochs/NNN/sample_NN.wav", "epochs/NNN/strip.png",
                      "epochs/original_NN.wav"}
    assert logged.data.tags["vaekit.metrics_skipped"].startswith("test_audio_mel_db, test_audio_stft_db: ")
    conditional_only = {"condition.classes", "sample_label_accuracy", "sample_label_classifier_accuracy",
                        "data/condition.json"}  # tests/test_conditioning.py checks a conditional run logs them
    assert not conditional_only & (got["params"] | got["metrics"] | got["artifacts"]), "an unconditional run logged them"
    only_some_runs |= conditional_only
    documented = documented_logged_keys()
    assert set(documented) == set(got)
    for what, keys in documented.items():
        patterns = {key: re.compile(re.sub("|".join(placeholders), lambda m: f"({placeholders[m.group()]})",
                                           re.escape(key).replace(r"\*", ".*")) + "$") for key in keys}
        for key in got[what]:
            assert any(p.match(key) for p in patterns.values()), f"{what} {key!r} is logged but not in docs/logged.md"
        for key, pattern in patterns.items():
            if key not in only_some_runs:
                assert any(pattern.match(k) for k in got[what]), f"docs/logged.md lists {what} {key!r}; the run logged none"


def test_runs_get_readable_names_that_do_not_repeat_with_the_seed():
    """Issue 16 item 5: every run was called the same because vaekit seeds Python's random before MLflow
    draws a name.  vaekit names runs itself: encoder, loss, λ and a suffix that no seed fixes."""
    import random

    from vaekit.components import resolve
    from vaekit.config import RunConfig
    from vaekit.runlog import run_name

    config = RunConfig()
    comps = resolve(config)
    names = []
    for _ in range(3):
        random.seed(config.seed)
        np.random.seed(config.seed)
        names.append(run_name(config, comps))
    assert len(set(names)) == 3, names
    assert all(n.startswith("conv2-mse-kl-λ500-") for n in names), names
    other = RunConfig(encoder="dense", decoder="conv2", loss="kl-warmup", options={"loss": {"lambda": 1000}})
    assert run_name(other, resolve(other)).startswith("dense+conv2-kl-warmup-λ1000-")
    assert run_name(RunConfig(run_name="mine"), comps) == "mine"
