"""Vocoder speed and quality: every registered vocoder vs the notebook's per-clip loop, same clips.

The baseline is what the notebook does for each generated spectrogram::

    librosa.feature.inverse.mel_to_audio(librosa.db_to_power(mel_db), sr=..., n_fft=..., hop_length=...)

Figures: clips/s (wall time of one call on all clips, after a warm-up call on 2 clips) and
``vocoder_mel_error_db`` (:func:`vaekit.audio.mel_error_db`: mean |dB| between the asked-for mel
spectrogram and the mel spectrogram of the audio produced; lower is better).

    python benchmarks/vocoder.py                    # 16 synthetic held-out clips
    python benchmarks/vocoder.py --data DIR -n 32   # x_test of a notebook-format directory
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_clips(n: int, audio, seed: int = 1) -> np.ndarray:
    """Mel spectrograms (dB) of voiced-like clips: harmonic tones with vibrato, onsets and noise."""
    from vaekit.audio import waveforms_to_mel_db

    rng = np.random.default_rng(seed)
    t = np.arange(audio.samples) / audio.sr
    y = np.zeros((n, audio.samples), dtype=np.float64)
    for i in range(n):
        f0 = rng.uniform(90, 300)
        vibrato = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / audio.sr
        for h in range(1, 8):
            y[i] += rng.uniform(0.2, 1.0) / h * np.sin(h * phase)
        onset, offset = sorted(rng.uniform(0.05, 0.95, size=2))
        y[i] *= np.clip((t - onset) * 20, 0, 1) * np.clip((offset - t) * 20, 0, 1)
        y[i] += 0.01 * rng.standard_normal(audio.samples)
    return waveforms_to_mel_db(y.astype(np.float32), audio)


def notebook_loop(audio):
    import librosa

    def vocode(mel_db):
        return np.stack([
            librosa.feature.inverse.mel_to_audio(librosa.db_to_power(m), sr=audio.sr, n_fft=audio.n_fft,
                                                 hop_length=audio.hop_length, fmin=audio.fmin, fmax=audio.fmax)
            for m in mel_db
        ])

    return vocode


def measure(vocode, mel_db, audio) -> tuple[float, float]:
    from vaekit.audio import mel_error_db

    vocode(mel_db[:2])  # warm-up: imports, caches, FFT plans
    start = time.perf_counter()
    out = vocode(mel_db)
    seconds = time.perf_counter() - start
    return len(mel_db) / seconds, mel_error_db(out, mel_db, audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="notebook-format directory (its x_test); default: synthetic clips")
    parser.add_argument("-n", "--clips", type=int, default=16, help="held-out clips [16]")
    args = parser.parse_args()

    from vaekit.audio import AudioParams
    from vaekit.components import all_components

    if args.data:
        from vaekit.data import load_notebook_dir

        ds = load_notebook_dir(args.data)
        audio, mel_db = ds.audio, ds.denormalize(ds.x_test[: args.clips])
        source = f"{args.data} x_test[:{len(mel_db)}]"
    else:
        audio = AudioParams()
        mel_db, source = synthetic_clips(args.clips, audio), f"{args.clips} synthetic clips"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; clips: {source}, "
          f"mel {mel_db.shape[1]}x{mel_db.shape[2]}")
    base_rate, base_err = measure(notebook_loop(audio), mel_db, audio)
    print(f"{'vocoder':<24} {'clips/s':>9} {'mel err dB':>11} {'speed ×':>8}")
    print(f"{'notebook mel_to_audio':<24} {base_rate:9.2f} {base_err:11.3f} {1.0:8.1f}")
    for name, comp in all_components("vocoder").items():
        rate, err = measure(comp.create(audio), mel_db, audio)
        verdict = "no worse" if err <= base_err else "WORSE"
        print(f"{name:<24} {rate:9.2f} {err:11.3f} {rate / base_rate:8.1f}   error {verdict} than the notebook")


if __name__ == "__main__":
    main()
