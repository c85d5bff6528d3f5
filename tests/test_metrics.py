"""Issue 12: audio metrics (formulas by hand, a plugin metric end to end), early stopping, resconv, reconstruct on folders."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import docs_page, error_line, make_tones, run_cli, runs_in, tiny_config
from vaekit.audio import AudioParams

AUDIO = AudioParams()

PEAK_METRIC = '''
import vaekit


def build():
    """Largest |dB| error of any reconstructed pixel."""
    return lambda original, reconstructed, sampled, audio, vocoded: {"test_peak_db": abs(original - reconstructed).max()}


@vaekit.hookimpl
def register_metrics(register):
    register("peak", build)
'''

# λ·MSE + KL + 1000·epoch: the loss rises every epoch, so the best epoch is the first, whatever is learnt.
# With RISING_FAIL_AT=E in the environment it is NaN from epoch E on (0-based): the run fails there.
RISING_LOSS = '''
import os

import vaekit


def build(lambda_=500.0):
    """λ·MSE + KL + 1000·epoch (a test loss: rises each epoch)."""
    fail_at = float(os.environ.get("RISING_FAIL_AT", "inf"))

    def loss(x, x_hat, z_mean, z_log_var, epoch):
        from keras import ops

        mse = ops.mean(ops.square(x - x_hat))
        kl = 0.5 * ops.mean(ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)
        boom = ops.where(epoch >= fail_at, float("nan"), 0.0)
        return {"loss": lambda_ * mse + kl + 1000.0 * epoch + boom, "mse": mse, "kl": kl}

    return loss


@vaekit.hookimpl
def register_losses(register):
    register("rising", build)
'''


# -- formulas, against hand computations -------------------------------------------------------------------------

def test_recon_mel_db_is_the_mean_absolute_db_difference():
    from vaekit.audio_metrics import per_clip_mel_db, recon_mel_db

    a = np.array([[[0.0, -10.0], [-20.0, -30.0]]])
    b = np.array([[[1.0, -10.0], [-24.0, -29.0]]])
    assert recon_mel_db(a, b) == pytest.approx((1 + 0 + 4 + 1) / 4)
    assert per_clip_mel_db(np.concatenate([a, a]), np.concatenate([b, a])).tolist() == pytest.approx([1.5, 0.0])


def test_mcd_by_hand():
    """Two bands, one frame: DCT-II (orthonormal) of 2 points: c1 = (x0 − x1)/√2; on ln amplitude (dB·ln10/20)."""
    from vaekit.audio_metrics import mcd_db

    a = np.array([[[-10.0], [-30.0]]])  # (1 clip, 2 bands, 1 frame)
    b = np.array([[[-10.0], [-20.0]]])
    to_ln = math.log(10) / 20
    c1_a, c1_b = (-10 + 30) / math.sqrt(2) * to_ln, (-10 + 20) / math.sqrt(2) * to_ln
    expected = 10 / math.log(10) * math.sqrt(2 * (c1_a - c1_b) ** 2)
    assert mcd_db(a, b) == pytest.approx(expected)
    # A level shift of every band changes c0 only, which MCD leaves out.
    assert mcd_db(a, a + 7.0) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_in_one_dimension_is_mean_gap_squared_plus_std_gap_squared():
    from vaekit.audio_metrics import frechet_distance

    a = np.array([[1.0], [3.0]])  # mean 2, variance 2 (ddof 1)
    b = np.array([[4.0], [6.0], [8.0]])  # mean 6, variance 4
    assert frechet_distance(a, b) == pytest.approx((2 - 6) ** 2 + (math.sqrt(2) - 2) ** 2)
    assert frechet_distance(b, b) == pytest.approx(0.0, abs=1e-9)


def test_sample_fd_uses_each_bands_mean_and_std_over_frames():
    from vaekit.audio_metrics import clip_statistics

    mel = np.array([[[1.0, 3.0], [10.0, 10.0]]])  # band 0: mean 2, std 1; band 1: mean 10, std 0
    assert clip_statistics(mel).tolist() == [[2.0, 10.0, 1.0, 0.0]]


def test_diversity_by_hand_and_zero_for_a_collapsed_model():
    from vaekit.audio_metrics import diversity, mean_pairwise_distance

    x = np.array([[[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 8.0]]])  # distances 5, 8, 5
    assert mean_pairwise_distance(x) == pytest.approx(6.0)
    test = np.array([[[0.0, 0.0]], [[0.0, 3.0]]])  # one pair, distance 3
    assert diversity(x, test) == pytest.approx(2.0)
    assert diversity(np.repeat(x[:1], 5, axis=0), test) == 0.0


def test_vocoded_mel_db_compares_the_vocoded_audio_with_the_original():
    from vaekit.audio import waveforms_to_mel_db
    from vaekit.audio_metrics import Vocoded
    from vaekit.default_plugins.metrics import build_vocoded_mel_db

    tones = make_tones(3, AUDIO)
    original = waveforms_to_mel_db(tones, AUDIO)
    metric = build_vocoded_mel_db()
    # A vocoder that returns the original audio: nothing lost.
    assert metric(original, original, None, AUDIO, Vocoded(None, original, waves=tones))["test_vocoded_mel_db"] < 1e-4
    # Half the amplitude: −6.02 dB in every mel bin above the 80 dB floor (clipped bins stay equal).
    got = metric(original, original, None, AUDIO, Vocoded(None, original, waves=tones[:2] / 2))["test_vocoded_mel_db"]
    again = waveforms_to_mel_db(tones[:2] / 2, AUDIO)
    assert got == pytest.approx(float(np.mean(np.abs(again - original[:2]))))
    assert 0 < got <= 20 * math.log10(2) + 1e-3


# -- against the original audio (issue 21) ------------------------------------------------------------------------

def _floored_by_hand(ref_db, other_db):
    """mean over clips of mean |max(R, f) − max(O, f)|, f = each clip's max(R) − 80 dB."""
    out = []
    for r, o in zip(ref_db, other_db):
        f = r.max() - 80.0
        out.append(np.mean(np.abs(np.maximum(r, f) - np.maximum(o, f))))
    return float(np.mean(out))


def test_the_floor_by_hand():
    from vaekit.audio_metrics import floored_distance_db

    ref = np.array([[0.0, -70.0, -90.0, -100.0]])
    other = np.array([[-3.0, -85.0, -50.0, -100.0]])
    # floor −80: ref → 0, −70, −80, −80; other → −3, −80, −50, −80; |differences| 3, 10, 30, 0.
    assert floored_distance_db(ref, other) == pytest.approx((3 + 10 + 30 + 0) / 4)
    # Each clip has its own floor (its original's peak − 80), and clips count equally.
    # Second clip: peak −10, floor −90: ref → −10, −20, −90, −30; other → −10, −26, −60, −90; |differences| 0, 6, 30, 60.
    ref2 = np.concatenate([ref, [[-10.0, -20.0, -95.0, -30.0]]])
    other2 = np.concatenate([other, [[-10.0, -26.0, -60.0, -100.0]]])
    assert floored_distance_db(ref2, other2) == pytest.approx(((3 + 10 + 30 + 0) / 4 + (0 + 6 + 30 + 60) / 4) / 2)


@pytest.mark.parametrize("sr", [22050, 16000])
def test_audio_mel_db_and_audio_stft_db_by_hand(sr):
    """librosa's own mel spectrogram and STFT at the reference analysis (22050 Hz, 80 mels / n_fft 1024 / hop 256;
    FFT sizes 512, 1024, 2048 with hop n_fft/4), power in dB with a −100 dB floor, the 80 dB floor per clip."""
    import librosa

    from vaekit.audio_metrics import audio_mel_db, audio_stft_db

    audio = AudioParams(sr=sr)
    original = make_tones(2, audio, seed=1)
    vocoded = original * 0.7 + 0.02 * np.random.default_rng(2).standard_normal(original.shape).astype(np.float32)
    if sr != 22050:
        to_ref = [librosa.resample(y, orig_sr=sr, target_sr=22050, res_type="soxr_hq") for y in (original, vocoded)]
    else:
        to_ref = [original, vocoded]

    def mel_db(y):
        p = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=1024, hop_length=256, n_mels=80, power=2.0,
                                           pad_mode="constant")
        return librosa.power_to_db(p, ref=1.0, amin=1e-10, top_db=None)

    def stft_db(y, n_fft):
        return 20 * np.log10(np.maximum(np.abs(librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 4, pad_mode="constant")),
                                        1e-5))

    expected_mel = _floored_by_hand(mel_db(to_ref[0]), mel_db(to_ref[1]))
    expected_stft = np.mean([_floored_by_hand(stft_db(to_ref[0], n), stft_db(to_ref[1], n)) for n in (512, 1024, 2048)])
    assert audio_mel_db(original, vocoded, sr) == pytest.approx(expected_mel, rel=1e-4)
    assert audio_stft_db(original, vocoded, sr) == pytest.approx(expected_stft, rel=1e-4)
    assert expected_mel > 1 and expected_stft > 1


def test_half_the_amplitude_is_6_02_db_away_in_both():
    """White noise never falls 80 dB below its peak: every value is clipped by neither, and halving the amplitude moves
    each by 20·log10(2) dB."""
    from vaekit.audio_metrics import audio_mel_db, audio_stft_db

    noise = np.random.default_rng(0).standard_normal((2, 22050)).astype(np.float32) * 0.1
    assert audio_mel_db(noise, noise / 2, 22050) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert audio_stft_db(noise, noise / 2, 22050) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert audio_mel_db(noise, noise, 22050) == 0.0 == audio_stft_db(noise, noise, 22050)


def _metric(name):
    from vaekit.components import get_component

    return get_component("metrics", name)


def test_a_metric_declaring_context_gets_it_and_one_that_cannot_be_computed_is_skipped_with_the_reason(tmp_path):
    from vaekit.audio_metrics import MetricContext, ReferenceAudio, Vocoded, audio_mel_db, audio_stft_db, compute
    from vaekit.components import Component

    tones = make_tones(3, AUDIO)
    mel = np.zeros((3, 50, 50))
    seen = {}

    def build_plain():
        return lambda original, reconstructed, sampled, audio, vocoded: {"test_plain": 1.0}

    def build_curious():
        def metric(original, reconstructed, sampled, audio, vocoded, *, context):
            seen["context"] = context
            return {"test_refs": float(len(context.reference_audio(2)))}
        return metric

    comps = [_metric("test_audio_mel_db"), _metric("test_audio_stft_db"), Component("metrics", "plain", build_plain, "t", "0"),
             Component("metrics", "curious", build_curious, "t", "0")]
    vocoded = Vocoded(None, mel, waves=tones * 0.5)
    context = MetricContext(reference_audio=ReferenceAudio.of(tones))
    out = compute(comps, mel, mel, None, AUDIO, vocoded, {"clips": 3}, context)
    assert seen["context"] is context and out["test_refs"] == 2.0 and out["test_plain"] == 1.0
    assert out["test_audio_mel_db"] == pytest.approx(audio_mel_db(tones, tones * 0.5, AUDIO.sr))
    assert out["test_audio_stft_db"] == pytest.approx(audio_stft_db(tones, tones * 0.5, AUDIO.sr))
    assert context.skipped == {}

    # docs/metrics.md's example of a metric of one's own that takes the context: SNR against the original audio.
    from conftest import docs_page
    from vaekit.plugins import load_plugin_file

    example = docs_page("metrics.md").split("# snr_metric.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "snr_metric.py").write_text(example)
    load_plugin_file(tmp_path / "snr_metric.py")
    snr = compute([_metric("snr")], mel, mel, None, AUDIO, vocoded, None, context)["test_snr_db"]
    assert snr == pytest.approx(10 * math.log10(1 / 0.25), rel=1e-4)  # ŷ = y/2: noise y/2, a quarter of the power

    unknown = MetricContext(reference_reason="DIR: the data holds spectrograms only")
    out = compute(comps[:3], mel, mel, None, AUDIO, vocoded, None, unknown)
    assert out == {"test_plain": 1.0}
    assert unknown.skipped == {"test_audio_mel_db": "DIR: the data holds spectrograms only",
                               "test_audio_stft_db": "DIR: the data holds spectrograms only"}
    compute([_metric("snr")], mel, mel, None, AUDIO, vocoded, None, unknown)
    assert unknown.skipped["snr"] == "DIR: the data holds spectrograms only"


def test_the_metrics_against_the_original_audio_are_columns_of_the_sweep_and_tune_tables():
    """Both tables show the test_ and sample_ metrics a child logged (vaekit.launcher.TABLE_METRICS)."""
    from vaekit.commands.sweep import format_table
    from vaekit.launcher import TABLE_METRICS, TrialRun

    assert all(_metric(name).name.startswith(TABLE_METRICS) for name in ("test_audio_mel_db", "test_audio_stft_db"))
    child = TrialRun(0, {"loss.lambda": 500}, 0, status="FINISHED", run_id="r1",
                     metrics={"test_audio_mel_db": 7.25, "test_audio_stft_db": 9.5})
    header, row = format_table([("loss.lambda", [500])], [child]).splitlines()[:3:2]
    assert header.split() == ["#", "loss.lambda", "status", "test_audio_mel_db", "test_audio_stft_db", "run", "id"]
    assert row.split() == ["0", "500", "FINISHED", "7.2500", "9.5000", "r1"]


def _prepared(tmp_path, **kw):
    from test_prepare import make_audio_tree

    from vaekit.data import load_notebook_dir
    from vaekit.prepare import audio_params, prepare_folder

    src = make_audio_tree(tmp_path / "audio", speakers=2, per_speaker=4, bad=False)
    prepare_folder(src, tmp_path / "prepared", audio_params(**kw), workers=1, progress=False)
    return src, load_notebook_dir(tmp_path / "prepared")


def test_prepare_records_how_to_reload_each_test_clip_and_the_context_checks_it_did(tmp_path):
    import json
    import shutil

    from vaekit.audio_metrics import MetricSkipped, context_for
    from vaekit.prepare import read_clip

    src, ds = _prepared(tmp_path, sr=16000, n_mels=40, hop_length=400)
    meta = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    spec = meta["test_audio"]
    assert spec["kind"] == "files" and spec["root"] == str(src.resolve()) and len(spec["clips"]) == len(ds.x_test) == 2
    names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*"))
    assert [names[i] for i in spec["clips"]] == meta["test_files"]
    reference = context_for(ds).reference_audio
    waves = reference(5)  # at most the test set
    assert waves.shape == (2, 16000)
    for wave, name in zip(waves, meta["test_files"]):
        np.testing.assert_array_equal(wave, read_clip(src / name, ds.audio))

    # Prepared by an older vaekit (no test_audio): its source folder and test_files say the same.
    del meta["test_audio"]
    (tmp_path / "prepared" / "dataset.json").write_text(json.dumps(meta))
    from vaekit.data import load_notebook_dir

    np.testing.assert_array_equal(context_for(load_notebook_dir(tmp_path / "prepared")).reference_audio(2), waves)

    # A test file that changed since: its audio no longer gives its spectrogram, and the metrics say so.
    sf.write(src / meta["test_files"][1], np.zeros(8000, np.float32) + 0.1, 16000)
    with pytest.raises(MetricSkipped, match=rf"^test clip 1 \({meta['test_files'][1]}\) no longer gives its spectrogram "
                                            r"\([\d.]+ dB apart\): its audio changed since the data was prepared$"):
        context_for(ds).reference_audio(2)
    assert context_for(ds).reference_audio(1).shape == (1, 16000)  # the first is still the same
    # The folder is gone (the dataset was copied to another machine).
    shutil.rmtree(src)
    context = context_for(ds)
    assert context.reference_audio is None
    assert context.reference_reason == f"{ds.source}: the audio folder it was prepared from, {src.resolve()}, is not here"


def test_the_synthetic_voices_reference_is_each_clip_synthesised_again_and_plain_data_has_none(notebook_data):
    from vaekit.audio_metrics import context_for
    from vaekit.components import get_component
    from vaekit.data import load_notebook_dir
    from vaekit.synth import synthesize

    ds = get_component("dataset", "synthetic").create(None, AUDIO, clips=12, speakers=3, progress=False, n_mels=64)
    clips = ds.info["test_audio"]["clips"]
    assert ds.shape == (64, 50) and ds.audio.n_mels == 64
    assert len(clips) == len(ds.x_test) == 3 and ds.info["test_files"][0].endswith(f"clip{clips[0]:05d}")
    np.testing.assert_array_equal(context_for(ds).reference_audio(3), synthesize(clips, 0, 3, ds.audio)[0])
    plain = context_for(load_notebook_dir(notebook_data))
    assert plain.reference_audio is None
    assert plain.reference_reason == (f"{notebook_data}: the data holds spectrograms only (no dataset.json), so the "
                                      "original audio is not known")


def test_sample_metrics_need_samples():
    from vaekit.default_plugins.metrics import build_sample_diversity, build_sample_fd

    x = np.zeros((2, 3, 4))
    assert build_sample_fd()(x, x, None, AUDIO, None) == {} == build_sample_diversity()(x, x, None, AUDIO, None)


# -- a real run: every metric logged, a plugin metric, the reconstruction grid -----------------------------------

@pytest.fixture(scope="module")
def metric_run(notebook_data, tmp_path_factory):
    """One tiny run with the built-in metrics and a plugin's: (result, uri, store dir, plugin file)."""
    from vaekit.commands.run import run
    from vaekit.plugins import load_plugin_file, reset_plugin_manager

    where = tmp_path_factory.mktemp("metric-store")
    plugin = where / "peak_metric.py"
    plugin.write_text(PEAK_METRIC)
    cwd = os.getcwd()
    os.chdir(where)
    try:
        reset_plugin_manager()
        load_plugin_file(plugin)
        uri = f"sqlite:///{where / 'mlflow.db'}"
        names = "test_recon_mel_db,test_recon_mcd_db,test_vocoded_mel_db,sample_fd,sample_diversity,peak"
        result = run(tiny_config(notebook_data, uri, epochs=1, samples=2, metrics=names), progress=False)
    finally:
        os.chdir(cwd)
        reset_plugin_manager()
    return result, uri, where, plugin


def test_a_run_logs_every_metric_and_a_plugin_metric_end_to_end(metric_run):
    import matplotlib.image
    import mlflow

    result, uri, where, _ = metric_run
    logged = mlflow.MlflowClient(uri).get_run(result.run_id).data
    for key in ("test_recon_mel_db", "test_recon_mcd_db", "test_vocoded_mel_db", "sample_fd", "sample_diversity",
                "test_peak_db"):
        assert key in logged.metrics and math.isfinite(logged.metrics[key]), key
    assert logged.metrics["test_peak_db"] >= logged.metrics["test_recon_mel_db"] > 0
    assert logged.metrics["sample_diversity"] > 0
    assert logged.params["metrics"].endswith(",peak")
    grid = mlflow.MlflowClient(uri).download_artifacts(result.run_id, "figures/reconstruction_grid.png", str(where))
    assert matplotlib.image.imread(grid).shape[1] > 800  # 8 clips side by side


def test_the_logged_metrics_equal_an_independent_computation_on_the_runs_own_test_clips(metric_run, notebook_data):
    """The logged model, the dataset's files and the formulas of docs/metrics.md, outside the run's code path:
    a step of it that goes wrong (reconstructions not denormalised, the wrong clips, the wrong seed) shows."""
    import mlflow
    import scipy.fft
    import scipy.linalg

    from vaekit.audio import waveforms_to_mel_db
    from vaekit.components import vocode
    from vaekit.logged import build_vocoders, open_run

    result, uri, _, _ = metric_run
    logged = mlflow.MlflowClient(uri).get_run(result.run_id).data.metrics
    run = open_run(result.run_id, uri)
    lo, hi = float(np.load(notebook_data / "min_values.npy")), float(np.load(notebook_data / "max_values.npy"))
    x = np.load(notebook_data / "x_test.npy")
    original = x * (hi - lo) + lo  # the clips in dB, as the dataset's files define them
    mu, _ = run.model.encode(x[..., None])
    recon = np.asarray(run.model.decode(mu))[..., 0] * (hi - lo) + lo
    assert np.allclose(recon, run.denormalize(np.asarray(run.model.decode(mu))[..., 0]))

    diff = np.abs(original.astype(np.float64) - recon)
    assert logged["test_recon_mel_db"] == pytest.approx(diff.mean(), rel=1e-4)
    assert logged["test_peak_db"] == pytest.approx(diff.max(), rel=1e-4)  # the plugin metric saw the same clips
    cep = lambda db: scipy.fft.dct(db.astype(np.float64) * math.log(10) / 20, type=2, norm="ortho", axis=1)[:, 1:13]
    mcd = 10 / math.log(10) * np.sqrt(2 * np.sum((cep(original) - cep(recon)) ** 2, axis=1))
    assert logged["test_recon_mcd_db"] == pytest.approx(mcd.mean(), rel=1e-4)

    (comp, fn), = build_vocoders(run).values()  # the run's vocoder with its options, on the first 4 reconstructions
    again = waveforms_to_mel_db(vocode(comp, fn, recon[:4].astype(np.float32)), AUDIO)
    assert logged["test_vocoded_mel_db"] == pytest.approx(np.abs(again - original[:4]).mean(), rel=1e-3)

    z = np.random.default_rng(run.config.seed).standard_normal((256, run.latent_dim))  # the run's 256 draws
    sampled = np.asarray(run.model.decode(z.astype(np.float32)))[..., 0] * (hi - lo) + lo
    stats = lambda db: np.concatenate([db.mean(axis=2), db.std(axis=2)], axis=1).astype(np.float64)
    s, t = stats(sampled), stats(original)
    root = np.real(scipy.linalg.sqrtm(np.cov(s, rowvar=False) @ np.cov(t, rowvar=False)))
    fd = np.sum((s.mean(0) - t.mean(0)) ** 2) + np.trace(np.cov(s, rowvar=False) + np.cov(t, rowvar=False) - 2 * root)
    assert logged["sample_fd"] == pytest.approx(fd, rel=1e-3)
    spread = lambda db: np.mean([np.linalg.norm(db[i] - db[j]) for i in range(len(db)) for j in range(i + 1, len(db))])
    assert logged["sample_diversity"] == pytest.approx(spread(sampled) / spread(original), rel=1e-3)


# "loud" reads the vocoded audio; "broken" fails on any input, as a metric with a bug would after hours of training.
BROKEN_METRIC = '''
import numpy as np

import vaekit


def build_broken():
    return lambda original, reconstructed, sampled, audio, vocoded: {"test_broken": np.linalg.inv(np.zeros((2, 2)))}


def build_loud():
    return lambda original, reconstructed, sampled, audio, vocoded: {"test_loud": float(np.abs(vocoded(2)).max())}


@vaekit.hookimpl
def register_metrics(register):
    register("broken", build_broken)
    register("loud", build_loud)
'''


def test_a_broken_plugin_metric_fails_before_training_and_leaves_no_run(notebook_data, store, tmp_path):
    plugin = tmp_path / "broken_metric.py"
    plugin.write_text(BROKEN_METRIC)
    # 1000 epochs: were the metric tried only after training, this would time out rather than fail.
    res = run_cli("run", "--plugin", plugin, "--data", notebook_data, "--tracking-uri", store, "--metrics", "loud,broken",
                  "--epochs", 1000, "--quiet", cwd=tmp_path, timeout=180)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    [line] = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert f"metric 'broken' (from {plugin}) failed: LinAlgError: Singular matrix (pre-flight check on 16 test clips, " \
           "before training)" in line, line
    assert runs_in(store) == []
    # Without the broken one, the pre-flight passes: "loud" gets the vocoder pre-flight's waveform from vocoded().
    from types import SimpleNamespace

    from vaekit import audio_metrics
    from vaekit.components import select_metrics
    from vaekit.plugins import load_plugin_file, reset_plugin_manager

    reset_plugin_manager()
    load_plugin_file(plugin)
    try:
        ds = SimpleNamespace(x_test=np.random.default_rng(0).random((20, 8, 6, 1), np.float32), audio=AUDIO,
                             denormalize=lambda x: x[..., 0] * 80 - 80)
        tried = audio_metrics.check(select_metrics("loud,test_recon_mel_db"), ds, {}, np.full((1, 100), 0.5, np.float32))
        assert tried == {"test_loud": 0.5}  # the built-in is not tried: it has its tests
    finally:
        reset_plugin_manager()


def test_metrics_refuses_an_unknown_name_and_an_option_no_metric_has(notebook_data, store):
    from click.testing import CliRunner

    from vaekit.cli import main

    bad = CliRunner().invoke(main, ["run", "--data", str(notebook_data), "--metrics", "test_recon_mel_db,nope",
                                    "--tracking-uri", store])
    assert "--metrics: unknown metric 'nope'; available: " in error_line(bad)
    bad = CliRunner().invoke(main, ["run", "--data", str(notebook_data), "--option", "metrics.orderx=3",
                                    "--tracking-uri", store])
    assert "--option metrics.orderx: no selected metric has an option 'orderx'" in error_line(bad)
    bad = CliRunner().invoke(main, ["run", "--data", str(notebook_data), "--early-stop", "2", "--monitor", "val_foo",
                                    "--tracking-uri", store])
    assert "--monitor val_foo: not an epoch metric of this run; choose one of loss" in error_line(bad)


def test_generate_logs_the_sample_metrics_of_what_it_generated(metric_run, tmp_path):
    import mlflow

    from vaekit.commands.generate import generate
    from vaekit.plugins import load_plugin_file

    result, uri, _, plugin = metric_run
    load_plugin_file(plugin)
    out = generate(result.run_id, n=6, seed=3, options=["vocoder.n_iter=2"], tracking_uri=uri, log=True)
    assert {"generate.sample_fd", "generate.sample_diversity"} <= set(out.metrics)
    assert not any(k.startswith("generate.test_") for k in out.metrics)  # the run's own test figures are not redone
    logged = mlflow.MlflowClient(uri).get_run(result.run_id).data.metrics
    assert logged["generate.sample_fd"] == pytest.approx(out.metrics["generate.sample_fd"])
    # The keys, as docs/metrics.md and docs/listen.md name them: "sample metrics of what it generated, as
    # `generate.NAME`", and `vocoder_mel_error_db.VOCODER`.
    assert "`generate.NAME`" in docs_page("metrics.md") and "`vocoder_mel_error_db.VOCODER`" in docs_page("listen.md")
    samples = {k for k in result.metrics if k.startswith("sample_")}
    assert samples == {"sample_fd", "sample_diversity"}
    assert set(out.metrics) == {f"generate.{k}" for k in samples} | {"vocoder_mel_error_db.griffinlim"}
    assert {k for k in logged if k.startswith(("generate.", "vocoder_mel_error_db."))} >= set(out.metrics)


# -- reconstruct on folders --------------------------------------------------------------------------------------

def test_reconstruct_takes_folders_keeps_their_structure_and_lists_unreadable_files(metric_run, tmp_path):
    from click.testing import CliRunner

    from vaekit.cli import main

    result, uri, _, plugin = metric_run
    root = tmp_path / "takes"
    for i, rel in enumerate(["a/one.wav", "a/deep/two.wav", "three.flac", *(f"many/{k:02d}.wav" for k in range(15))]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, make_tones(1, AUDIO, seed=10 + i)[0], 22050)
    (root / "a" / "broken.wav").write_bytes(b"RIFF nonsense")
    out = tmp_path / "out"
    cli = CliRunner().invoke(main, ["reconstruct", result.run_id, str(root), "--out", str(out), "--tracking-uri", uri,
                                    "--option", "vocoder.n_iter=2", "--plugin", str(plugin), "--log"])
    assert cli.exit_code == 0, cli.output
    wavs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert len(wavs) == 18 and "a/deep/two.reconstructed.wav" in wavs and "three.reconstructed.wav" in wavs
    y, sr = sf.read(out / "a" / "one.reconstructed.wav")
    assert sr == 22050 and y.shape == (22050,)
    assert sorted(p.name for p in out.glob("*.png")) == ["reconstructions_000.png", "reconstructions_001.png"]  # 16 + 2
    assert "skipped 1 file(s):" in cli.output and "broken.wav: unreadable" in cli.output
    for key in ("reconstruct.test_recon_mel_db", "reconstruct.test_vocoded_mel_db", "reconstruct.test_peak_db",
                "vocoder_mel_error_db.griffinlim"):
        assert f"{key}: " in cli.output
    assert "sample_fd" not in cli.output  # no samples here
    import mlflow

    logged = mlflow.MlflowClient(uri).get_run(result.run_id).data.metrics
    assert logged["test_recon_mel_db"] == result.metrics["test_recon_mel_db"]  # the run's own figure kept
    # The keys, as docs/reconstruct.md names them: "the run's metrics that need no samples as reconstruct.NAME"
    # (its built-ins listed), and vocoder_mel_error_db.VOCODER.
    page = docs_page("reconstruct.md")
    audio = {"test_recon_mel_db", "test_recon_mcd_db", "test_vocoded_mel_db", "test_peak_db"}  # the run's --metrics' test_*
    assert audio <= set(result.metrics)
    assert {k for k in logged if k.startswith("reconstruct.")} == {f"reconstruct.{k}" for k in audio}
    assert all(f"`reconstruct.{k}`" in page for k in audio - {"test_peak_db"}) and "`vocoder_mel_error_db.VOCODER`" in page
    assert "vocoder_mel_error_db.griffinlim" in logged
    missing = CliRunner().invoke(main, ["reconstruct", result.run_id, str(root), "--tracking-uri", uri])
    assert "needs --out DIR" in error_line(missing)


# -- early stopping ----------------------------------------------------------------------------------------------

def _register_rising(tmp_path) -> Path:
    from vaekit.plugins import load_plugin_file

    path = tmp_path / "rising.py"
    path.write_text(RISING_LOSS)
    load_plugin_file(path)
    return path


def test_early_stop_stops_after_patience_and_restores_the_best_weights(notebook_data, store, tmp_path):
    from dataclasses import replace

    import keras
    import mlflow

    from vaekit import backend, components, distribute, training

    _register_rising(tmp_path)
    config = tiny_config(notebook_data, store, epochs=10, loss="rising", early_stop=2, monitor="loss")
    config = replace(config, backend=backend.select(config.backend))
    comps = components.resolve(config)
    ds = components.load_dataset(config, comps)
    model, _ = training.build(config, comps, ds, distribute.make_placement(None, config.backend))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_weights())

    mlflow.set_tracking_uri(store)
    with mlflow.start_run():
        out = training.fit(model, ds, config, progress=False, callbacks=[Record()])
    assert (out["best_epoch"], out["stopped_epoch"]) == (1, 3)  # epoch 1 best, 2 and 3 worse: stop
    assert len(seen) == 3
    now = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(now, seen[0]))  # the best epoch's weights, not the last
    assert not all(np.array_equal(a, b) for a, b in zip(now, seen[2]))


def test_early_stop_survives_a_failure_and_resume(notebook_data, store, tmp_path, monkeypatch):
    """The run fails in epoch 3 (0-based 2); its checkpoint keeps the stopper (best epoch 1, one epoch without
    improvement), so the resumed run stops after epoch 4 with epoch 1's weights, as an unbroken run would."""
    import mlflow

    from vaekit.checkpoint import load
    from vaekit.commands.run import run
    from vaekit.errors import TrainingError

    _register_rising(tmp_path)
    config = tiny_config(notebook_data, store, epochs=10, loss="rising", early_stop=3, monitor="loss",
                         checkpoint_interval=0, samples=1)
    monkeypatch.setenv("RISING_FAIL_AT", "2")
    with pytest.raises(TrainingError, match="the loss became nan at epoch 3"):
        run(config, progress=False)
    (failed,) = runs_in(store)
    ckpt = load(failed.info.run_id, store)
    assert ckpt.epoch == 2 and ckpt.early_stop[0]["best_epoch"] == 0 and ckpt.early_stop[0]["wait"] == 1
    assert ckpt.early_stop[1] and all(np.isfinite(w).all() for w in ckpt.early_stop[1])  # epoch 1's weights

    monkeypatch.delenv("RISING_FAIL_AT")
    result = run(config, progress=False, resume=failed.info.run_id)
    assert (result.metrics["best_epoch"], result.metrics["stopped_epoch"]) == (1, 4)
    logged = mlflow.MlflowClient(store).get_run(result.run_id).data.metrics
    assert (logged["best_epoch"], logged["stopped_epoch"]) == (1, 4)
    assert sorted(m.step for m in mlflow.MlflowClient(store).get_metric_history(result.run_id, "loss")) == [0, 1, 2, 3]


# -- resconv -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(50, 50), (13, 37), (64, 21)])
def test_resconv_takes_any_spectrogram_size(shape):
    from vaekit import backend

    backend.select(None)
    from vaekit.components import get_component
    from vaekit.model import check_model_shapes

    enc, dec = get_component("encoder", "resconv"), get_component("decoder", "resconv")
    x_shape = (*shape, 1)
    encoder = enc.create(x_shape, 4, filters=4, levels=3)
    decoder = dec.create(4, x_shape, filters=4, levels=3)
    check_model_shapes(encoder, decoder, {"encoder": enc, "decoder": dec}, x_shape, 4)
