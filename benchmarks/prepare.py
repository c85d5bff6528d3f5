"""Benchmark: `vaekit prepare` vs the plain per-file loop a user would write, on the same files.

Makes N real audio files in a temporary directory (spoken-digit-like clips: mixed wav/flac,
sample rates 8–48 kHz, some stereo, 0.4–1.6 s), then times

- baseline: one process, per file ``librosa.load(sr=22050, duration=1)`` → pad →
  ``librosa.feature.melspectrogram`` → ``librosa.power_to_db``;
- ``vaekit.prepare.prepare_folder`` (what ``vaekit prepare`` runs) on all CPU cores,
  writing the finished notebook-format dataset.

Both warm up on one file first (imports, resampler set-up), so neither pays one-off costs.
Prints files/s of each and the ratio (target ≥ 5×).

    python benchmarks/prepare.py [--files 600] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_files(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    rates, formats = (8000, 16000, 22050, 44100, 48000), ("wav", "flac")
    paths = []
    for i in range(n):
        sr, fmt = rates[i % len(rates)], formats[i % len(formats)]
        t = np.arange(int(sr * rng.uniform(0.4, 1.6))) / sr
        f0 = rng.uniform(90, 280)
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8)) * np.exp(-2 * t) * 0.2
        y = y + 0.01 * rng.standard_normal(len(t))
        if i % 3 == 0:
            y = np.stack([y, 0.8 * y], axis=1)
        spk = root / f"{i % 10:02d}"
        spk.mkdir(exist_ok=True)
        p = spk / f"{i % 10}_{i % 10:02d}_{i}.{fmt}"
        sf.write(p, y.astype(np.float32), sr)
        paths.append(p)
    return paths


def baseline(paths: list[Path]) -> np.ndarray:
    import librosa

    out = []
    for p in paths:
        y, sr = librosa.load(p, sr=22050, duration=1.0)
        y = librosa.util.fix_length(y, size=22050)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=442, n_mels=50)
        out.append(librosa.power_to_db(mel))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = ap.parse_args()

    from vaekit.prepare import default_workers, prepare_folder

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "audio"
        root.mkdir()
        paths = make_files(root, args.files)
        baseline(paths[:1])
        warm = Path(tmp) / "warm"
        warm.mkdir()
        for p in paths[:2]:
            os.link(p, warm / p.name)
        prepare_folder(warm, Path(tmp) / "warm-out", progress=False, workers=1)

        t = time.perf_counter()
        base = baseline(paths)
        t_base = time.perf_counter() - t

        t = time.perf_counter()
        summary = prepare_folder(root, Path(tmp) / "out", progress=False, workers=args.workers)
        t_prep = time.perf_counter() - t
        assert summary.train + summary.test == len(paths) and base.shape[1:] == summary.shape

    workers = args.workers or default_workers()
    print(f"files: {len(paths)} (wav/flac, 8–48 kHz, a third stereo), CPU cores available: {default_workers()}")
    print(f"baseline per-file librosa loop (1 process): {len(paths) / t_base:8.1f} files/s  ({t_base:.2f} s)")
    print(f"vaekit prepare ({workers} workers, dataset written): {len(paths) / t_prep:8.1f} files/s  ({t_prep:.2f} s)")
    print(f"ratio: {t_base / t_prep:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
