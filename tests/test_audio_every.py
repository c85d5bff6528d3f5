"""Issue 21 item 5: ``--audio-every N`` logs what the model sounds like while it trains, without changing training,
and a run that fails part-way resumes with it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient
from test_core import documented_logged_keys
from test_metrics import RISING_LOSS

from reliability_helpers import small_config

CLIP_FILES = {"reconstruction_00.wav", "reconstruction_01.wav", "sample_00.wav", "sample_01.wav", "strip.png"}


def artifacts(client, run_id, path=None):
    for f in client.list_artifacts(run_id, path):
        yield from (artifacts(client, run_id, f.path) if f.is_dir else [f.path])


def test_audio_every_logs_each_epochs_sound_changes_no_training_and_resumes(notebook_data, store, tmp_path, monkeypatch):
    """The rising loss (λ·MSE + KL + 1000·epoch) has mse-kl's gradients, so it trains exactly as mse-kl does; made to
    fail at the third epoch, the run logs two epochs' sounds, is resumed and logs the third, and ends with the test
    MSE of a plain mse-kl run without --audio-every."""
    import matplotlib.image

    from vaekit.checkpoint import resume_config
    from vaekit.commands.run import run
    from vaekit.plugins import load_plugin_file

    plain = run(small_config(notebook_data, store, epochs=3), progress=False)

    plugin = tmp_path / "rising.py"
    plugin.write_text(RISING_LOSS)
    load_plugin_file(plugin)
    monkeypatch.setenv("RISING_FAIL_AT", "2")
    config = small_config(notebook_data, store, epochs=3, loss="rising", audio_every=1, experiment="listening")
    with pytest.raises(Exception, match="the loss became nan at epoch 3"):
        run(config, progress=False)
    client = MlflowClient(store)
    [failed] = client.search_runs([client.get_experiment_by_name("listening").experiment_id])
    assert failed.info.status == "FAILED"
    logged = set(artifacts(client, failed.info.run_id, "epochs"))
    assert logged == {f"epochs/{e}/{f}" for e in ("001", "002") for f in CLIP_FILES} | {
        "epochs/original_00.wav", "epochs/original_01.wav"}

    monkeypatch.delenv("RISING_FAIL_AT")
    result = run(resume_config(failed.info.run_id, store), progress=False, resume=failed.info.run_id)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert result.metrics["test_mse"] == plain.metrics["test_mse"]  # listening drew nothing from training's randomness
    logged = set(artifacts(client, result.run_id))
    epochs = {a for a in logged if a.startswith("epochs/")}
    assert epochs == {f"epochs/{e}/{f}" for e in ("001", "002", "003") for f in CLIP_FILES} | {
        "epochs/original_00.wav", "epochs/original_01.wav"}
    # Every one of them is in docs/logged.md's list of artifacts.
    documented = [re.compile(re.escape(k).replace("NNN", r"\d\d\d").replace("NN", r"\d\d") + "$")
                  for k in documented_logged_keys()["artifacts"]]
    assert all(any(p.match(a) for p in documented) for a in epochs)

    local = tmp_path / "artifacts"
    client.download_artifacts(result.run_id, "", str(local))
    first, _ = sf.read(local / "epochs" / "001" / "sample_00.wav")
    # The fixed z are the run's own samples' z: after the last epoch, the same sound as samples/sample_00.wav.
    last, sr = sf.read(local / "epochs" / "003" / "sample_00.wav")
    final, _ = sf.read(local / "samples" / "sample_00.wav")
    assert sr == 22050 and last.shape == (22050,)
    np.testing.assert_array_equal(last, final)
    assert not np.allclose(first, last, atol=1e-2)  # the model changed between epochs 1 and 3, and so did its sound
    # Plain .npy data has no original audio: the originals are the test spectrograms vocoded.
    from vaekit.components import get_component
    from vaekit.data import load_notebook_dir

    ds = load_notebook_dir(notebook_data)
    vocoder = get_component("vocoder", "griffinlim").create(ds.audio, n_iter=4)
    original, _ = sf.read(local / "epochs" / "original_01.wav")
    expected = np.clip(vocoder(ds.denormalize(ds.x_test[1:2]))[0], -1, 1)  # a WAV file's 16-bit range
    np.testing.assert_allclose(original, expected, atol=1e-4)
    strip = matplotlib.image.imread(local / "epochs" / "002" / "strip.png")
    assert strip.shape[1] > 6 * strip.shape[0] / 2  # one row: 2 test clips, 2 reconstructions, 2 samples


def test_audio_every_is_a_setting_with_a_flag_and_a_bound():
    from vaekit.config import build_config
    from vaekit.errors import ConfigError

    assert build_config().audio_every == 10  # once in a default run: within 5 % of its time (benchmarks/audio_every.py)
    assert build_config(audio_every=0).audio_every == 0  # never
    assert build_config(audio_every=5).audio_every == 5
    with pytest.raises(ConfigError, match=r"^--audio-every must be 0 \(never\) or more epochs, got -1$"):
        build_config(audio_every=-1)
    with pytest.raises(ConfigError, match=r"^--audio-every: expected int, got 1.5$"):
        build_config(audio_every=1.5)
