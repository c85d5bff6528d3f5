"""The built-in synthetic voices: deterministic, voice-like (pitch, harmonics), cached, and the default dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_config
from vaekit.audio import AudioParams
from vaekit.errors import PluginError
from vaekit.synth import make_speakers, synthesize

AUDIO = AudioParams()



def test_clips_are_deterministic_and_independent_of_batching():
    a, spk_a = synthesize(range(6), seed=3)
    b, _ = synthesize([4], seed=3)
    c, _ = synthesize(range(6), seed=4)
    assert a.shape == (6, AUDIO.samples) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a[4], b[0])
    np.testing.assert_array_equal(a, synthesize(range(6), seed=3)[0])
    assert not np.allclose(a, c)
    assert list(spk_a) == [i % 24 for i in range(6)]
    assert 0.25 < np.abs(a).max() <= 0.81
    # An utterance with silence around it, not a wall of sound.
    rms = np.sqrt(np.mean(a.reshape(6, -1, 441) ** 2, axis=2))
    active = rms > 0.05 * rms.max(axis=1, keepdims=True)
    assert ((active.mean(axis=1) > 0.1) & (active.mean(axis=1) < 0.95)).all()


def test_speakers_span_80_to_300_hz_with_tracts_scaled_by_pitch():
    voices = make_speakers(24)
    f0 = np.array([v.f0 for v in voices])
    tract = np.array([v.tract for v in voices])
    assert 80 <= f0.min() < 100 and 260 < f0.max() <= 300
    assert np.corrcoef(np.log(f0), tract)[0, 1] > 0.8


def test_voiced_frames_have_the_speakers_pitch():
    """yin on the waveform finds each clip's speaker's pitch (within the per-clip intonation)."""
    import librosa

    voices = make_speakers(24)
    idx = list(range(0, 24, 2))
    waves, spk = synthesize(idx)
    found, wanted = [], []
    for y, s in zip(waves, spk):
        f0 = librosa.yin(y, fmin=60, fmax=400, sr=AUDIO.sr, frame_length=1024, hop_length=256)
        rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=256)[0][: len(f0)]
        voiced = f0[rms > 0.3 * rms.max()]
        assert len(voiced) >= 8
        found.append(np.median(voiced))
        wanted.append(voices[s].f0)
    found, wanted = np.array(found), np.array(wanted)
    assert np.all(np.abs(found / wanted - 1) < 0.2), np.c_[found, wanted]
    assert np.corrcoef(found, wanted)[0, 1] > 0.95


def test_mel_spectrograms_have_harmonic_peaks_at_the_speakers_f0():
    """For high voices (f0 > 200 Hz) the 50-band mel spectrogram resolves harmonics: the bands at
    f0 and 2·f0 stand well above the band at 1.5·f0 (between them)."""
    import librosa

    from vaekit.prepare import clips_to_mel_db

    voices = make_speakers(24)
    high = [i for i in range(48) if voices[i % 24].f0 > 200]
    db = clips_to_mel_db(synthesize(high)[0], AUDIO)
    centres = librosa.mel_frequencies(n_mels=AUDIO.n_mels + 2, fmax=AUDIO.sr / 2)[1:-1]
    band = lambda f: int(np.argmin(np.abs(centres - f)))  # noqa: E731
    margins = []
    for i, m in zip(high, db):
        f0 = voices[i % 24].f0
        loud = m.max(axis=0) > m.max() - 20
        profile = m[:, loud].mean(axis=1)
        margins.append(min(profile[band(f0)], profile[band(2 * f0)]) - profile[band(1.5 * f0)])
    margins = np.array(margins)
    assert len(margins) >= 8
    assert np.median(margins) > 6 and np.mean(margins > 3) >= 0.8, margins


def test_synthetic_dataset_is_cached_by_parameters_and_made_like_prepare(vaekit_cache):
    from vaekit.components import get_component
    from vaekit.prepare import clips_to_mel_db

    comp = get_component("dataset", "synthetic")
    ds = comp.create(None, AUDIO, clips=64, speakers=8, progress=False)
    where = Path(ds.source)
    assert where.parent.parent == vaekit_cache and where.parent.name == "synthetic" and where.name.startswith("v1-")
    assert ds.x_train.shape == (48, 50, 50) and ds.x_test.shape == (16, 50, 50)
    assert ds.info["generator"]["speakers"] == 8 and ds.info["source"] == "synthetic"
    # The same path as prepare: mel dB of the waveforms, one global min-max.
    first = int(ds.info["train_files"][0].split("clip")[1])
    db = clips_to_mel_db(synthesize([first], speakers=8)[0], AUDIO)[0]
    np.testing.assert_allclose(ds.denormalize(ds.x_train[0]), db, atol=1e-3)
    mtime = (where / "x_train.npy").stat().st_mtime_ns
    again = comp.create(None, AUDIO, clips=64, speakers=8, progress=False)
    assert again.source == ds.source and (where / "x_train.npy").stat().st_mtime_ns == mtime
    other = comp.create(None, AUDIO, clips=64, speakers=8, seed=1, progress=False)
    assert other.source != ds.source and not np.allclose(other.x_train, ds.x_train)
    # The audio parameters are options too (as vaekit prepare's flags), each set cached apart: 64 mels at hop 256.
    fine = comp.create(None, AUDIO, clips=64, speakers=8, n_mels=64, hop_length=256, progress=False)
    assert fine.x_train.shape == (48, 64, 87) and (fine.audio.n_mels, fine.audio.hop_length) == (64, 256)
    assert fine.info["audio"] == fine.audio.to_dict() and ds.audio == AUDIO
    assert sorted(p.name for p in (vaekit_cache / "synthetic").iterdir()) == sorted(
        {where.name, Path(other.source).name, Path(fine.source).name})
    assert comp.create(None, AUDIO, clips=64, speakers=8, n_mels=64, hop_length=256, progress=False).source == fine.source
    with pytest.raises(PluginError, match=r"^--option dataset.n_mels=0: out of range; dataset 'synthetic' takes "
                                          r"1 ≤ n_mels ≤ 1024$"):
        comp.create(None, AUDIO, clips=64, n_mels=0)


def test_run_without_data_trains_on_synthetic_voices(store, vaekit_cache):
    from vaekit.commands.run import run

    config = tiny_config("unused", store, options={"dataset": {"clips": 160, "progress": False},
                                                   "vocoder": {"n_iter": 4}})
    config.data = None  # no --data: the default dataset
    result = run(config, progress=False)
    r = MlflowClient(store).get_run(result.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params["dataset"] == "synthetic" and r.data.params["dataset.clips"] == "160"
    assert r.data.params["data.train"] == "120" and r.data.params["data.shape"] == "50x50"
    assert (vaekit_cache / "synthetic").is_dir()


def test_formants_shape_the_spectrum_where_the_vowel_puts_them():
    """Frames of open vowels (high F1: a, o) have more energy at 550–1100 Hz relative to 150–450 Hz
    than close vowels (i, u); front vowels (high F2: i, e) more at 1700–2700 Hz relative to
    700–1200 Hz than back ones (o, u).  Low voices, so harmonics sample the envelope densely."""
    import librosa

    from vaekit.synth import CONTROL, _plan_clip

    voices = make_speakers(24)
    low = [i for i in range(48) if voices[i % 24].f0 < 140]
    waves, _ = synthesize(low)
    k = AUDIO.samples // CONTROL + 2
    freqs = librosa.fft_frequencies(sr=AUDIO.sr, n_fft=1024)
    f1 = {"open": [], "close": []}
    f2 = {"front": [], "back": []}
    for i, y in zip(low, waves):
        plan = _plan_clip(np.random.default_rng([0, i]), voices[i % 24], k, CONTROL / AUDIO.sr)  # as synthesize draws it
        power = np.abs(librosa.stft(y, n_fft=1024, hop_length=CONTROL)) ** 2
        n = min(power.shape[1], k)
        band = lambda lo, hi: power[(freqs >= lo) & (freqs < hi), :n].sum(axis=0) + 1e-12  # noqa: E731
        tract = voices[i % 24].tract
        voiced = plan["voice"][:n] > 0.5
        F1, F2 = plan["formants"][:n, 0] / tract, plan["formants"][:n, 1] / tract
        r1 = 10 * np.log10(band(550, 1100) / band(150, 450))
        r2 = 10 * np.log10(band(1700, 2700) / band(700, 1200))
        f1["open"] += list(r1[voiced & (F1 > 600)])
        f1["close"] += list(r1[voiced & (F1 < 350)])
        f2["front"] += list(r2[voiced & (F2 > 1700)])
        f2["back"] += list(r2[voiced & (F2 < 1000)])
    assert min(map(len, [*f1.values(), *f2.values()])) > 50
    assert np.median(f1["open"]) - np.median(f1["close"]) > 10
    assert np.median(f2["front"]) - np.median(f2["back"]) > 10
