"""Listening to a logged run: figures and vocoder error in every run; generate, interpolate, reconstruct."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import error_line, make_tones, run_cli, tiny_run
from vaekit.audio import AudioParams

AUDIO = AudioParams()

SECOND_VOCODER = '''
import vaekit
from vaekit.default_plugins.griffinlim import build


def build_quick(audio, n_iter=2):
    return build(audio, n_iter=n_iter)


@vaekit.hookimpl
def register_vocoders(register):
    register("gl-quick", build_quick)
'''


@pytest.fixture(scope="module")
def trained(notebook_data, tmp_path_factory):
    """One finished tiny run (2 epochs) shared by this module's tests: (run_id, tracking URI)."""
    from vaekit.plugins import reset_plugin_manager

    reset_plugin_manager()
    return tiny_run(notebook_data, tmp_path_factory.mktemp("store"), epochs=2, samples=2)


def _client(uri):
    import mlflow

    return mlflow.MlflowClient(uri)


def test_every_run_logs_figures_denormalisation_arrays_and_vocoder_error(trained, notebook_data, tmp_path):
    import matplotlib.image

    run_id, uri = trained
    client = _client(uri)
    run = client.get_run(run_id)
    err = run.data.metrics["vocoder_mel_error_db"]
    assert np.isfinite(err) and err >= 0
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert figures == {"figures/reconstructions.png", "figures/reconstruction_grid.png", "figures/samples_grid.png",
                       "figures/training_curves.png"}
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    for name in figures:
        img = matplotlib.image.imread(local / name)
        assert img.shape[0] > 100 and img.shape[1] > 200 and img[..., :3].std() > 0.05  # drawn, not blank
    for name in ("min_values", "max_values"):
        np.testing.assert_array_equal(np.load(local / "data" / f"{name}.npy"), np.load(notebook_data / f"{name}.npy"))


def test_generate_writes_and_logs_back_several_vocoders_for_the_same_z(trained, tmp_path):
    from vaekit.commands.generate import generate
    from vaekit.plugins import load_plugin_file

    run_id, uri = trained
    plugin = tmp_path / "quick.py"
    plugin.write_text(SECOND_VOCODER)
    load_plugin_file(plugin)
    before = _client(uri).get_run(run_id).info
    # No --option: griffinlim keeps the run's options (n_iter=4), gl-quick its default (n_iter=2).
    out = generate(run_id, n=3, vocoders=["griffinlim", "gl-quick"], seed=5,
                   out=tmp_path / "gen", log=True, tracking_uri=uri)

    d = tmp_path / "gen" / "seed_5"
    waves = {v: [sf.read(d / v / f"sample_{i:02d}.wav") for i in range(3)] for v in ("griffinlim", "gl-quick")}
    for v, items in waves.items():
        for y, sr in items:
            assert sr == 22050 and y.shape == (22050,) and np.isfinite(y).all() and np.abs(y).max() > 0
    # Same z, different vocoders (different iteration counts): same length, different audio.
    assert not np.allclose(waves["griffinlim"][0][0], waves["gl-quick"][0][0])
    assert sorted(p.name for p in d.glob("*.png")) == ["grid.png", "sample_00.png", "sample_01.png", "sample_02.png"]
    # Each vocoder's error, and the run's sample metrics on what was generated (the decoder's, one set for all vocoders).
    assert set(out.metrics) == {"vocoder_mel_error_db.griffinlim", "vocoder_mel_error_db.gl-quick",
                                "generate.sample_fd", "generate.sample_diversity"}

    client = _client(uri)
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == before.end_time
    assert after.data.metrics["vocoder_mel_error_db.gl-quick"] == pytest.approx(out.metrics["vocoder_mel_error_db.gl-quick"])
    [call] = {a.rsplit("/", 2)[0] for a in out.artifacts if a.endswith(".wav")}  # each call its own folder
    assert re.fullmatch(r"generated/seed_5/\d{8}-\d{6}-[0-9a-f]{12}", call), call
    logged = {a.path for a in client.list_artifacts(run_id, f"{call}/gl-quick")}
    assert logged == {f"{call}/gl-quick/sample_{i:02d}.wav" for i in range(3)}

    # Seeded: the same seed gives the same sound, another seed another one.
    again = generate(run_id, n=1, options=["vocoder.n_iter=4"], seed=5, out=tmp_path / "again", log=False,
                     tracking_uri=uri)
    # (to 16-bit rounding: a batch of 1 decodes with slightly different float arithmetic than a batch of 3)
    np.testing.assert_allclose(sf.read(again.files[0])[0], waves["griffinlim"][0][0], atol=1e-3)


def test_a_component_name_never_becomes_a_path_outside_the_output(trained, tmp_path):
    """A plugin may register any name; where it names a folder or file it goes through safe_name."""
    from vaekit.commands.generate import generate
    from vaekit.plugins import load_plugin_file

    run_id, uri = trained
    plugin = tmp_path / "escape.py"
    plugin.write_text(SECOND_VOCODER.replace('"gl-quick"', '"../../escape"'))
    load_plugin_file(plugin)
    out_dir = tmp_path / "sandbox" / "gen"
    out = generate(run_id, n=1, vocoders=["griffinlim", "../../escape"], seed=1, out=out_dir, log=False,
                   tracking_uri=uri)
    assert out.files and all(out_dir in f.parents for f in out.files)
    assert (out_dir / "seed_1" / "escape" / "sample_00.wav").is_file()
    assert sorted(p.name for p in (tmp_path / "sandbox").iterdir()) == ["gen"]
    assert not (tmp_path / "escape").exists()


def test_interpolate_between_seeds_and_between_test_clips(trained, tmp_path):
    from vaekit.commands.generate import interpolate
    from vaekit.errors import ConfigError
    from vaekit.logged import open_run

    run_id, uri = trained
    run = open_run(run_id, uri)
    seeds = interpolate(run_id, seeds=(0, 1), steps=4, options=["vocoder.n_iter=2"], out=tmp_path / "o", log=False,
                        run=run)
    d = tmp_path / "o" / "interpolate_seeds_0_1"
    assert sorted(p.name for p in (d / "griffinlim").iterdir()) == [f"step_{i:02d}.wav" for i in range(4)]
    assert (d / "strip.png").stat().st_size > 1000 and not seeds.artifacts

    clips = interpolate(run_id, clips=(0, 3), steps=3, options=["vocoder.n_iter=2"], log=True, run=run)
    [strip] = [a for a in clips.artifacts if a.endswith("/strip.png")]
    call = strip.rsplit("/", 1)[0]
    assert call.startswith("generated/interpolate_clips_0_3/")
    assert {a.path for a in _client(uri).list_artifacts(run_id, f"{call}/griffinlim")} == {
        f"{call}/griffinlim/step_{i:02d}.wav" for i in range(3)}
    with pytest.raises(ConfigError, match="test clip 999 out of range"):
        interpolate(run_id, clips=(0, 999), run=run, log=False, out=tmp_path / "never")
    for steps in (1, 65):
        with pytest.raises(ConfigError, match=f"--steps must be 2 to 64, got {steps}"):
            interpolate(run_id, clips=(0, 3), steps=steps, run=run, log=False, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_reconstruct_a_real_clip_at_another_rate_in_stereo(trained, tmp_path):
    from vaekit.audio import AudioParams
    from vaekit.commands.generate import reconstruct

    run_id, uri = trained
    tone = make_tones(2, AudioParams(sr=44100, duration=1.5), seed=3)
    wav = tmp_path / "clip.wav"
    sf.write(wav, tone.T, 44100)  # 1.5 s stereo at 44.1 kHz: downmixed, resampled, trimmed
    out = reconstruct(run_id, wav, options=["vocoder.n_iter=4"], tracking_uri=uri)
    y, sr = sf.read(tmp_path / "clip.reconstructed.wav")
    assert sr == 22050 and y.shape == (22050,) and np.isfinite(y).all()
    assert (tmp_path / "clip.reconstructed.png").stat().st_size > 1000
    assert out.metrics["vocoder_mel_error_db.griffinlim"] >= 0 and not out.artifacts


def test_reconstruct_never_writes_through_a_symlink_at_its_output(trained, tmp_path):
    """A link where STEM.reconstructed.wav goes (planted, or left from a tidy-up) must not make vaekit
    overwrite the file it points to, nor create the file a dangling link names."""
    from vaekit.commands.generate import reconstruct
    from vaekit.errors import DataError

    run_id, uri = trained
    wav = tmp_path / "clip.wav"
    sf.write(wav, make_tones(1, AUDIO, seed=4)[0], 22050)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "clip.reconstructed.wav").symlink_to(victim)
    with pytest.raises(DataError, match=rf"{tmp_path / 'clip.reconstructed.wav'}: is a symbolic link \(to {victim}\); "
                                        "not writing through it"):
        reconstruct(run_id, wav, options=["vocoder.n_iter=2"], tracking_uri=uri)
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.reconstructed.wav", "clip.wav", "victim.txt"]

    (tmp_path / "clip.reconstructed.wav").unlink()
    elsewhere = tmp_path / "elsewhere" / "new.png"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "clip.reconstructed.png").symlink_to(elsewhere)  # dangling
    with pytest.raises(DataError, match="clip.reconstructed.png: is a symbolic link"):
        reconstruct(run_id, wav, options=["vocoder.n_iter=2"], out=tmp_path / "out", log=True, tracking_uri=uri)
    assert not elsewhere.parent.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.reconstructed.png"]  # nothing else landed
    assert _client(uri).list_artifacts(run_id, "generated/reconstruct_clip") == []  # nor in the run


def test_reconstruct_calls_a_fifo_not_a_regular_file_before_loading_anything(tmp_path):
    from vaekit.commands.generate import reconstruct
    from vaekit.errors import DataError

    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=f"^{fifo}: not a regular file$"):  # not "file not found"; never opened
        reconstruct("0123456789abcdef", fifo, tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")


def test_a_file_name_with_a_newline_never_becomes_an_artifact_name(trained, tmp_path):
    """Local files keep the user's own name; what is logged into the run is made safe, folder and files."""
    from vaekit.commands.generate import reconstruct

    run_id, uri = trained
    wav = tmp_path / "take\n2.wav"
    sf.write(wav, make_tones(1, AUDIO, seed=5)[0], 22050)
    out = reconstruct(run_id, wav, options=["vocoder.n_iter=2"], out=tmp_path / "out", log=True, tracking_uri=uri)
    call = out.artifacts[0].rsplit("/", 1)[0]
    assert call.startswith("generated/reconstruct_take_2/")
    assert sorted(out.artifacts) == [f"{call}/take_2.reconstructed.png", f"{call}/take_2.reconstructed.wav"]
    logged = {a.path for a in _client(uri).list_artifacts(run_id, call)}
    assert logged == set(out.artifacts)
    assert not any("\n" in a.path for a in _client(uri).list_artifacts(run_id, "generated"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["take\n2.reconstructed.png",
                                                                   "take\n2.reconstructed.wav"]


def test_runs_without_a_model_or_unknown_ids_are_one_line_errors(trained, tmp_path):
    import mlflow

    from vaekit.errors import VaekitError
    from vaekit.logged import open_run

    run_id, uri = trained
    client = _client(uri)
    # A run that has everything but the model, as one stopped while logging it would.
    bare = client.create_run(client.get_run(run_id).info.experiment_id)
    src = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    for name in ("audio.json", "config.toml"):
        client.log_artifact(bare.info.run_id, str(src / name))
    client.log_artifacts(bare.info.run_id, str(src / "data"), "data")
    client.set_terminated(bare.info.run_id, "KILLED")
    with pytest.raises(VaekitError, match=f"run {bare.info.run_id} has no logged model"):
        open_run(bare.info.run_id, uri)
    failed = client.create_run(client.get_run(run_id).info.experiment_id)  # failed before logging anything
    client.set_terminated(failed.info.run_id, "FAILED")
    with pytest.raises(VaekitError, match=r"has no logged model \(status FAILED: it failed or was stopped"):
        open_run(failed.info.run_id, uri)
    assert mlflow.active_run() is None

    missing = run_cli("generate", "0123456789abcdef", "--tracking-uri", uri, cwd=tmp_path, timeout=120)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1] == f"Error: run 0123456789abcdef: not found in the tracking store {uri}"
    nowhere = run_cli("generate", run_id, "--no-log", cwd=tmp_path, timeout=120,
                      env={"MLFLOW_TRACKING_URI": uri})
    assert nowhere.returncode != 0 and "--no-log needs --out" in nowhere.stderr
    typo = run_cli("reconstruct", run_id, tmp_path / "typo.wav", "--tracking-uri", uri, cwd=tmp_path, timeout=120)
    assert typo.returncode != 0
    assert typo.stderr.strip().splitlines()[-1] == f"Error: {tmp_path / 'typo.wav'}: file not found"


def test_cli_generate(trained, tmp_path):
    run_id, uri = trained
    out = run_cli("generate", run_id, "-n", "2", "--option", "vocoder.n_iter=2", "--out", tmp_path / "g",
                  "--no-log", "--tracking-uri", uri, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "vocoder_mel_error_db.griffinlim:" in out.stdout
    assert len(list((tmp_path / "g" / "seed_0" / "griffinlim").glob("*.wav"))) == 2
    # A label means nothing to an unconditional run (tests/test_conditioning.py asks conditional runs for one).
    from vaekit.cli import main

    for args in (["generate", run_id, "--label", "seven"], ["interpolate", run_id, "--label", "one", "two"]):
        line = error_line(CliRunner().invoke(main, [*args, "--no-log", "--out", tmp_path / "l", "--tracking-uri", uri]))
        assert line == f"Error: --label: run {run_id} is unconditional (trained without --condition): it generates from z alone"
    assert not (tmp_path / "l").exists()
