"""Issue 21 item 1: any resolution end to end, square or not, through every command.

Two tiny runs, one per shape, are shared by the module: 128×87 (128 mels, hop 256, the synthetic voices, set with
``--option dataset.…``, a small dense model) and 80×44 (80 mels, hop 512, a folder of recordings, set in a
``--config`` TOML's ``[options.dataset]``, a small conv2: padded to 82×46 inside, cropped back).  Each goes through
run, the metrics against the original audio, figures, generate, interpolate, reconstruct, explore, export (ONNX) and
the served generator.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from test_prepare import make_audio_tree

from conftest import make_tones

SHAPES = {
    # name: (H, W, how the run is configured, its dataset)
    "128x87": (128, 87, "flags", "synthetic"),
    "80x44": (80, 44, "toml", "audio-folder"),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def shaped(request, tmp_path_factory):
    """One finished tiny run at a shape, through ``vaekit run``: a dict of what the tests need."""
    from vaekit.cli import main
    from vaekit.plugins import reset_plugin_manager

    h, w, how, dataset = SHAPES[request.param]
    where = tmp_path_factory.mktemp(f"run-{request.param}")
    cache = where / "cache"
    uri = f"sqlite:///{where / 'mlflow.db'}"
    args = ["run", "--tracking-uri", uri, "--epochs", "1", "--batch-size", "8", "--samples", "1", "--latent-dim", "4",
            "--option", "vocoder.n_iter=4", "--quiet"]
    if how == "flags":  # 128 mels at hop 256: 1 + 22050 // 256 = 87 frames
        args += ["--encoder", "dense", "--decoder", "dense", "--option", "encoder.units=16", "--option", "decoder.units=16",
                 "--option", "dataset.clips=16", "--option", "dataset.speakers=4", "--option", "dataset.progress=false",
                 "--option", "dataset.n_mels=128", "--option", "dataset.hop_length=256"]
        data = None
    else:  # 80 mels at hop 512: 44 frames; the recordings are of several rates, lengths and formats
        data = make_audio_tree(where / "audio", speakers=2, per_speaker=8, bad=False)
        config = where / "run.toml"
        config.write_text('encoder = "conv2"\ndecoder = "conv2"\n'
                          '[options.encoder]\nfilters1 = 4\nfilters2 = 4\ndense1 = 16\ndense2 = 8\n'
                          '[options.decoder]\nfilters1 = 4\nfilters2 = 4\ndense1 = 16\ndense2 = 8\n'
                          '[options.dataset]\nn_mels = 80\nhop_length = 512\nprogress = false\n')
        args += ["--config", str(config), "--data", str(data)]
    reset_plugin_manager()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEKIT_CACHE", str(cache))
        mp.chdir(where)
        result = CliRunner().invoke(main, args)
    reset_plugin_manager()
    assert result.exit_code == 0, (result.output, result.exception)
    run_id = re.search(r"^run id:\s+(\w+)$", result.stdout, re.M).group(1)
    return {"name": request.param, "shape": (h, w), "run_id": run_id, "uri": uri, "where": where, "cache": cache,
            "stdout": result.stdout, "dataset": dataset, "data": data}


@pytest.fixture
def with_cache(shaped, monkeypatch):
    """The run's dataset cache, so commands that load its test set find it (the synthetic voices are not regenerated)."""
    monkeypatch.setenv("VAEKIT_CACHE", str(shaped["cache"]))
    return shaped


def test_the_run_trains_measures_and_draws_at_its_shape(shaped, tmp_path):
    import matplotlib.image
    import mlflow

    h, w = shaped["shape"]
    client = mlflow.MlflowClient(shaped["uri"])
    run = client.get_run(shaped["run_id"])
    assert run.data.params["data.shape"] == f"{h}x{w}" and run.data.params["dataset"] == shaped["dataset"]
    assert int(run.data.params["audio.n_mels"]) == h
    metrics = run.data.metrics
    for key in ("test_mse", "test_recon_mel_db", "test_recon_mcd_db", "test_vocoded_mel_db", "test_audio_mel_db",
                "test_audio_stft_db", "sample_fd", "sample_diversity", "vocoder_mel_error_db"):
        assert np.isfinite(metrics[key]), key
    assert metrics["test_audio_mel_db"] > 0 and metrics["test_audio_stft_db"] > 0
    assert "vaekit.metrics_skipped" not in run.data.tags  # the original audio is known for both datasets
    line = next(line for line in shaped["stdout"].splitlines() if line.startswith("metrics:"))
    assert "test_audio_mel_db" in line and "test_audio_stft_db" in line
    local = Path(client.download_artifacts(shaped["run_id"], "", str(tmp_path)))
    for name in ("reconstructions", "reconstruction_grid", "samples_grid", "training_curves"):
        assert matplotlib.image.imread(local / "figures" / f"{name}.png").shape[0] > 100
    wave, sr = sf.read(local / "samples" / "sample_00.wav")
    assert sr == 22050 and wave.shape == (22050,) and np.abs(wave).max() > 0
    if shaped["dataset"] == "audio-folder":  # conv2 padded the input to the sizes its decoder mirrors, then cropped
        from vaekit.logged import open_run

        model = open_run(shaped["run_id"], shaped["uri"]).model
        assert tuple(model.encoder.get_layer("pad").output.shape[1:3]) == (82, 46)
        assert tuple(model.decoder.output.shape[1:3]) == (h, w)


def test_generate_interpolate_and_reconstruct_at_its_shape(with_cache, tmp_path):
    from vaekit.commands.generate import generate, interpolate, reconstruct
    from vaekit.logged import open_run

    shaped = with_cache
    h, w = shaped["shape"]
    run = open_run(shaped["run_id"], shaped["uri"])
    assert run.input_shape == (h, w)
    out = generate(shaped["run_id"], n=2, out=tmp_path / "gen", log=False, run=run)
    assert np.isfinite(out.metrics["vocoder_mel_error_db.griffinlim"])
    assert out.metrics["generate.sample_diversity"] >= 0  # the run's test set loaded again at its shape
    wave, sr = sf.read(tmp_path / "gen" / "seed_0" / "griffinlim" / "sample_01.wav")
    assert (sr, wave.shape) == (22050, (22050,))
    walk = interpolate(shaped["run_id"], clips=(0, 1), steps=3, out=tmp_path / "walk", log=False, run=run)
    assert len([f for f in walk.files if f.suffix == ".wav"]) == 3
    clip = tmp_path / "clip.wav"
    sf.write(clip, make_tones(1, run.audio, seed=3)[0], 22050)
    rec = reconstruct(shaped["run_id"], clip, out=tmp_path / "rec", run=run)
    assert (tmp_path / "rec" / "clip.reconstructed.wav").is_file()
    for key in ("reconstruct.test_recon_mel_db", "reconstruct.test_audio_mel_db", "reconstruct.test_audio_stft_db"):
        assert np.isfinite(rec.metrics[key]) and rec.metrics[key] > 0, key


def test_explore_maps_plays_and_decodes_at_its_shape(with_cache):
    from vaekit.commands.explore import load_explorer

    shaped = with_cache
    h, w = shaped["shape"]
    explorer = load_explorer(shaped["run_id"], tracking_uri=shaped["uri"])
    info = explorer.info()
    assert (info["n_mels"], info["frames"], info["latent_dim"]) == (h, w, 4)
    assert len(explorer.points()["points"]) == info["points"] == 4
    clip = explorer.clip(0)
    for part in ("original", "reconstruction"):
        assert np.array(clip["spectrogram"][part]).shape == (h, w)
        assert explorer.clip_wave(0, part).shape == (22050,)
    assert explorer.decode([0.5, -1.0, 0.0, 2.0]).shape == (22050,)
    assert explorer.interpolate({"a": 0, "b": 1, "steps": 2}).shape == (2 * 22050 + round(0.15 * 22050),)


def test_export_and_the_served_generator_at_its_shape(shaped, tmp_path):
    import mlflow
    import onnxruntime

    from vaekit.commands.export import export
    from vaekit.logged import open_run
    from vaekit.serving import Generator  # noqa: F401  (what the generator model imports)

    h, w = shaped["shape"]
    run = open_run(shaped["run_id"], shaped["uri"])
    z = np.random.default_rng(0).standard_normal((2, 4), dtype=np.float32)
    export(shaped["run_id"], tmp_path / "onnx", tracking_uri=shaped["uri"])
    decoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    mel = decoder.run(None, {"z": z})[0]
    assert mel.shape == (2, h, w, 1)
    np.testing.assert_allclose(mel, run.model.decode(z), atol=1e-5)
    encoder = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    mu = encoder.run(None, {"mel": mel})[0]
    np.testing.assert_allclose(mu, run.model.encode(mel)[0], atol=1e-4)
    assert f"mel (batch, {h}, {w}, 1)" in (tmp_path / "onnx" / "README.txt").read_text()

    mlflow.set_tracking_uri(shaped["uri"])
    uri = mlflow.MlflowClient(shaped["uri"]).get_run(shaped["run_id"]).data.tags["vaekit.generator_uri"]
    answers = mlflow.pyfunc.load_model(uri).predict({"z": z.tolist()})
    waves = [sf.read(io.BytesIO(base64.b64decode(a)), dtype="float32") for a in answers]
    assert [(sr, wave.shape) for wave, sr in waves] == [(22050, (22050,))] * 2
