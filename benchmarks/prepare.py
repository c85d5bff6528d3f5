"""Benchmark: `vaekit prepare` vs the plain per-file loop a user would write, on the same files.

Makes N real audio files in a temporary directory (spoken-digit-like clips: mixed wav/flac,
sample rates 8–48 kHz, some stereo, 0.4–1.6 s), then times

- baseline: one process, per file ``librosa.load(sr=22050, duration=1)`` → pad →
  ``librosa.feature.melspectrogram`` → ``librosa.power_to_db``; once as is (default BLAS
  threads) and once with BLAS limited to one thread (fairer on a busy machine);
- ``vaekit.prepare.prepare_folder`` (what ``vaekit prepare`` runs) on all CPU cores,
  writing the finished notebook-format dataset.

Both warm up first (imports, resampler set-up), so neither pays one-off costs; each runs
``--repeat`` times, interleaved, and the fastest counts (the machine may be shared).
Prints files/s of each, the ratio (target ≥ 5×), and CPU time per file (which a busy
machine disturbs less than wall time).

    python benchmarks/prepare.py [--files 600] [--workers 0] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def baseline_one_thread(paths: list[Path]) -> np.ndarray:
    """The same loop with OpenBLAS at one thread: its default threads spin and cost CPU on a busy machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return baseline(paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each, interleaved; the best counts")
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

        load = os.getloadavg()[0]
        base_runs, base1_runs, prep_runs = [], [], []
        for r in range(args.repeat):  # interleaved, best of each: the machine may be shared
            base_runs.append(timed(lambda: baseline(paths)))
            base1_runs.append(timed(lambda: baseline_one_thread(paths)))
            out = Path(tmp) / f"out{r}"
            prep_runs.append(timed(lambda: prepare_folder(root, out, progress=False, workers=args.workers)))
        summary = prep_runs[0][2]
        assert summary.train + summary.test == len(paths) and base_runs[0][2].shape[1:] == summary.shape

    best = lambda runs: min(runs, key=lambda r: r[0])  # noqa: E731
    (t_base, c_base, _), (t_base1, c_base1, _), (t_prep, c_prep, _) = best(base_runs), best(base1_runs), best(prep_runs)
    workers = args.workers or default_workers()
    n = len(paths)
    print(f"files: {n} (wav/flac, 8–48 kHz, a third stereo); CPU cores available: {default_workers()}; "
          f"load average before: {load:.1f}; best of {args.repeat}")
    print(f"baseline per-file librosa loop (1 process): {n / t_base:7.1f} files/s  ({t_base:.2f} s wall, "
          f"{1000 * c_base / n:.2f} ms CPU/file)")
    print(f"the same loop, BLAS limited to 1 thread:    {n / t_base1:7.1f} files/s  ({t_base1:.2f} s wall, "
          f"{1000 * c_base1 / n:.2f} ms CPU/file)")
    print(f"vaekit prepare ({workers} workers, dataset written): {n / t_prep:7.1f} files/s  ({t_prep:.2f} s wall, "
          f"{1000 * c_prep / n:.2f} ms CPU/file incl. workers)")
    print(f"ratio (files/s): {t_base / t_prep:.1f}x (target >= 5x); CPU per file: {c_base / c_prep:.1f}x less")
    print(f"ratio vs the 1-BLAS-thread loop: {t_base1 / t_prep:.1f}x; CPU per file: {c_base1 / c_prep:.1f}x less")


def timed(fn):
    """(wall seconds, CPU seconds of this process and its reaped children, result)."""
    def cpu():
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    c, t = cpu(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t, cpu() - c, result

if __name__ == "__main__":
    main()
