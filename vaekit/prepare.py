"""``vaekit prepare``: a folder tree of audio → notebook-format data (see :mod:`vaekit.data`).

The path of every clip, real or synthetic, is: waveform → mono, ``audio.sr`` → padded or
trimmed to ``audio.duration`` → mel power (``audio.n_mels``, ``n_fft``, ``hop_length``) →
dB (:func:`vaekit.audio.waveforms_to_mel_db`) → one global min–max normalisation to [0, 1]
(``min_values.npy``/``max_values.npy`` are scalars) → a seeded train/test split.

Bounded memory: clips are read, converted and written in chunks (a process pool over chunks
of files); spectrograms in dB are streamed into a work file on disk, then normalised block by
block into ``x_train.npy``/``x_test.npy``.  Nothing holds all the audio or all the spectrograms.
Everything is written into a hidden sibling directory that is renamed to ``OUT_DIR`` at the
end (:func:`vaekit.data.staged_output_dir`), so an interrupted run leaves no dataset.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaekit import __version__, data
from vaekit.audio import AudioParams, fit_length, notebook_hop_length, waveforms_to_mel_db
from vaekit.data import check_output_dir, staged_output_dir, write_meta
from vaekit.errors import ConfigError, DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Files per task sent to a worker: large enough to batch the STFT, small enough to keep memory low.
CHUNK_FILES = 32
#: Spectrograms per block when normalising into x_train/x_test.
WRITE_BLOCK = 512
SPLITS = ("random", "speaker")
#: Below this many tasks a process pool costs more than it saves: starting its workers costs more than
#: reading a few chunks in this process (figure in docs/benchmarks.md).
MIN_POOL_TASKS = 4


#: Sample rates a file's header may give (Hz): telephone speech to 768 kHz studio audio.  Outside, the header
#: is damaged or hostile; resampling from it costs time and memory that grow with the claimed rate.
SAMPLE_RATES = (1000, 768_000)


class ClipError(Exception):
    """A file that cannot be used as a clip; the message says why (it is skipped, not fatal)."""


@dataclass
class PrepareSummary:
    """What :func:`prepare_folder` did."""

    out_dir: Path
    files: int
    train: int
    test: int
    shape: tuple[int, int]
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    #: Label name → its number of classes.
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else float("inf")


def audio_params(sr: int | None = None, duration: float | None = None, n_mels: int | None = None,
                 n_fft: int | None = None, hop_length: int | None = None) -> AudioParams:
    """:class:`AudioParams` with the notebook's defaults; without ``hop_length`` the hop gives 50 frames a clip."""
    base = AudioParams()
    sr = base.sr if sr is None else sr
    duration = base.duration if duration is None else duration
    if hop_length is None:
        hop_length = notebook_hop_length(max(1, int(round(sr * duration))))
    values = dict(sr=sr, duration=duration, n_mels=base.n_mels if n_mels is None else n_mels,
                  n_fft=base.n_fft if n_fft is None else n_fft,
                  hop_length=hop_length)
    try:
        return AudioParams.from_dict({**base.to_dict(), **values}, source="audio parameters")
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def find_audio(root) -> list[Path]:
    """Every .wav/.flac/.ogg file under ``root`` (any case), sorted by relative path."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(AUDIO_EXTENSIONS))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def has_audio(path) -> bool:
    """Whether ``path`` is a directory with at least one audio file in its tree (stops at the first)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for _, _, filenames in os.walk(path):
        if any(f.lower().endswith(AUDIO_EXTENSIONS) for f in filenames):
            return True
    return False


def read_clip(path, audio: AudioParams) -> np.ndarray:
    """One file → mono float32 waveform at ``audio.sr``, exactly ``audio.samples`` long.

    Reads only the first ``duration`` seconds.  Raises :class:`ClipError` for a file that is
    not a regular file (a FIFO, a device, ...: never opened, so a pipe cannot block), unreadable,
    corrupt, empty, not finite, or whose header gives a sample rate outside :data:`SAMPLE_RATES`.
    """
    import librosa
    import soundfile as sf

    fd = None
    try:
        _check_regular(os.stat(path).st_mode)  # before opening: opening some devices has effects
        # Non-blocking, and checked again on the descriptor: a file swapped for a FIFO in between
        # must not block the open (nor the read: libsndfile gets this very descriptor).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        _check_regular(st.st_mode)
        if st.st_size == 0:
            raise ClipError("empty (0 bytes)")
        with sf.SoundFile(fd, closefd=False) as f:
            sr = f.samplerate
            if not SAMPLE_RATES[0] <= sr <= SAMPLE_RATES[1]:
                raise ClipError(f"sample rate {sr} Hz in its header, outside {SAMPLE_RATES[0]}–{SAMPLE_RATES[1]} Hz "
                                "(a damaged file?)")
            frames = f.frames
            want = int(math.ceil(audio.duration * sr)) + 1
            y = f.read(min(frames, want) if frames > 0 else want, dtype="float32", always_2d=True)
    except ClipError:
        raise
    except Exception as exc:  # libsndfile reports corrupt files in several exception types
        why = (exc.strerror if isinstance(exc, OSError) and exc.strerror else
               " ".join(re.sub(r"^Error opening .*?: ", "", str(exc)).split()) or type(exc).__name__)
        raise ClipError(f"unreadable ({why})") from None
    finally:
        if fd is not None:
            os.close(fd)
    if y.shape[0] == 0:
        raise ClipError("empty (no samples)")
    y = y.mean(axis=1)
    if not np.isfinite(y).all():
        raise ClipError("holds NaN or Inf samples")
    if sr != audio.sr:
        y = librosa.resample(y, orig_sr=sr, target_sr=audio.sr, res_type="soxr_hq")
    return fit_length(y, audio.samples).astype(np.float32, copy=False)


def _check_regular(mode: int) -> None:
    """:class:`ClipError` unless ``mode`` (of ``os.stat``, links followed) is a regular file's."""
    import stat

    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
                 stat.S_ISBLK: "a block device", stat.S_ISDIR: "a directory"}
        kind = next((name for test, name in kinds.items() if test(mode)), "special")
        raise ClipError(f"not a regular file ({kind})")


def clips_to_mel_db(waveforms: np.ndarray, audio: AudioParams) -> np.ndarray:
    """Waveforms (N, samples) at ``audio.sr`` → mel dB (N, n_mels, frames): the path every clip takes."""
    return waveforms_to_mel_db(fit_length(np.asarray(waveforms, dtype=np.float32), audio.samples), audio)


def _convert_chunk(task):
    """Worker: (indices, paths, audio dict) → (usable indices, mel dB, [(index, reason)])."""
    indices, paths, audio_dict = task
    audio = AudioParams(**audio_dict)
    ok, waves, skipped = [], [], []
    for i, p in zip(indices, paths):
        try:
            waves.append(read_clip(p, audio))
            ok.append(i)
        except ClipError as exc:
            skipped.append((i, str(exc)))
    if not waves:
        return np.asarray(ok, dtype=np.int64), None, skipped
    return np.asarray(ok, dtype=np.int64), clips_to_mel_db(np.stack(waves), audio), skipped


def _one_blas_thread():
    """A context with BLAS at one thread (threadpoolctl comes with librosa, via scikit-learn).

    Workers already fill the cores, and OpenBLAS threads spinning against them cost more CPU
    than the small mel products gain.  In and out of the pool the same single-threaded
    arithmetic also makes the result independent of ``--workers``, bit for bit.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _init_worker():
    # Ctrl-C reaches the whole process group; only the parent should react (and clean up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _one_blas_thread()  # not used as a context: the limit lasts for the worker's life


def _pool_context():
    import multiprocessing as mp

    # fork is fastest, but not once TensorFlow's threads exist (`vaekit run --data AUDIO_DIR`).
    return mp.get_context("spawn" if "tensorflow" in sys.modules else "fork")


def _warm_up(audio: AudioParams) -> None:
    """Import librosa's resampler (scipy.signal: seconds) and run the mel path once."""
    import librosa

    librosa.resample(np.zeros(64, dtype=np.float32), orig_sr=audio.sr, target_sr=audio.sr + 1, res_type="soxr_hq")
    clips_to_mel_db(np.zeros((1, audio.samples), dtype=np.float32), audio)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def run_chunks(fn, tasks: list, workers: int | None = None) -> Iterator:
    """Yield ``fn(task)`` for each task, in completion order, over a process pool of ``workers``.

    At most two tasks per worker are in flight, so finished results never pile up in memory.
    One worker, or fewer than ``MIN_POOL_TASKS`` tasks, run in this process.  ``fn`` must be a module-level function.
    """
    workers = default_workers() if not workers or workers < 1 else workers
    if workers == 1 or len(tasks) < MIN_POOL_TASKS:
        with _one_blas_thread():
            for task in tasks:
                yield fn(task)
        return
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=_pool_context(), initializer=_init_worker)
    try:
        pending = set()
        todo = iter(tasks)
        for task in todo:
            pending.add(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(pool.submit(fn, nxt))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def convert_files(paths: list[Path], audio: AudioParams, workers: int | None = None) -> Iterator[tuple]:
    """Yield ``(indices, mel dB, skipped)`` for chunks of ``paths``, in completion order."""
    tasks = [(list(range(s, min(s + CHUNK_FILES, len(paths)))), [str(p) for p in paths[s:s + CHUNK_FILES]],
              audio.to_dict()) for s in range(0, len(paths), CHUNK_FILES)]
    _warm_up(audio)  # once here, not once per worker: forked workers inherit the imports
    return run_chunks(_convert_chunk, tasks, workers)


def split_indices(usable: np.ndarray, groups: list[str] | None, test_fraction: float, seed: int):
    """Seeded train/test split of ``usable`` clip indices; with ``groups`` each group goes to one side only.

    Returns (train, test), each sorted.  By clips, ``round(n · test_fraction)`` go to test
    (30,000 → 7,500); by groups, whole groups in a seeded order until that many are reached.
    """
    usable = np.asarray(usable, dtype=np.int64)
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if len(usable) < 2:
        raise DataError(f"{len(usable)} usable clip(s): a train/test split needs at least 2")
    rng = np.random.default_rng(seed)
    n_test = min(max(1, int(round(len(usable) * test_fraction))), len(usable) - 1)
    if groups is None:
        test = rng.permutation(usable)[:n_test]
    else:
        labels = np.asarray([groups[i] for i in usable])
        names = np.unique(labels)
        if len(names) < 2:
            raise DataError(f"--split-by speaker needs at least 2 speakers (parent folders); found {len(names)}")
        chosen, count = [], 0
        for name in rng.permutation(names):
            if count >= n_test or len(chosen) == len(names) - 1:
                break
            chosen.append(name)
            count += int((labels == name).sum())
        test = usable[np.isin(labels, chosen)]
    is_test = np.isin(usable, test)
    return np.sort(usable[~is_test]), np.sort(usable[is_test])


def write_dataset(out_dir, n: int, results: Iterable[tuple], names: list[str], audio: AudioParams, *,
                  groups: list[str] | None = None, test_fraction: float = 0.25, seed: int = 0,
                  force: bool = False, meta: dict | None = None, progress=None,
                  labels: dict[str, str] | None = None, strict_labels: bool = True) -> PrepareSummary:
    """Stream converted chunks into a complete notebook-format ``out_dir`` (or leave nothing).

    ``results`` yields ``(indices, mel_db or None, [(index, reason)])`` for clips ``0..n-1``
    named ``names``; ``groups`` (a speaker per clip) makes the split keep groups apart.
    ``progress`` is a tqdm-like object updated per clip.  ``meta["test_audio"]``, if given, says how to
    reload the waveform of each test clip (see :func:`vaekit.audio_metrics.test_audio_loader`); the
    clip number of each row of ``x_test`` is added to it as ``"clips"``.  ``labels`` (``{NAME: SOURCE}``, see
    :func:`vaekit.data.parse_label_specs`) are read from ``names`` before any clip is converted and
    written as ``y_train.npy``/``y_test.npy``; with ``strict_labels`` a class only in the test split is
    a :class:`DataError` naming its first file (a model conditioned on it would never see it).
    """
    start = time.perf_counter()
    where = (meta or {}).get("source", str(out_dir))  # what errors name
    values = data.label_values(names, labels, where) if labels else {}  # a missing field costs no conversion
    shape = (audio.n_mels, audio.frames)
    skipped: dict[int, str] = {}
    with staged_output_dir(out_dir, force) as tmp:
        # Raw dB rows go to a work file by clip index with pwrite (no memory map: the pages of a
        # 30,000-clip map would count as this process's memory); then one sequential pass.
        row_bytes = 4 * shape[0] * shape[1]
        work = tmp / "mel_db.work"
        # The work file is closed and the worker pool (owned by the `results` generator) shut down on
        # every path, errors included.
        stop_results = contextlib.closing(results) if hasattr(results, "close") else contextlib.nullcontext()
        with open(work, "w+b") as work_file, stop_results:
            work_file.truncate(n * row_bytes)
            usable = np.zeros(n, dtype=bool)
            lo, hi = np.inf, -np.inf
            for idx, mel, bad in results:
                if mel is not None and len(idx):
                    mel = np.ascontiguousarray(mel, dtype=np.float32)
                    for row, i in zip(mel, idx):
                        os.pwrite(work_file.fileno(), row.tobytes(), int(i) * row_bytes)
                    usable[idx] = True
                    lo, hi = min(lo, float(mel.min())), max(hi, float(mel.max()))
                skipped.update(bad)
                if progress is not None:
                    progress.update(len(idx) + len(bad))
            if progress is not None:
                progress.close()
            skipped_list = [{"file": names[i], "reason": r} for i, r in sorted(skipped.items())]
            if not usable.any():
                first = skipped_list[0] if skipped_list else {"file": "?", "reason": "?"}
                raise DataError(f"{where}: none of the {n} audio file(s) could be used; first: {first['file']}: "
                                f"{first['reason']}")
            try:
                train, test = split_indices(np.flatnonzero(usable), groups, test_fraction, seed)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            span = hi - lo if hi > lo else 1.0
            made = data.labels_from_values(values, train, test, labels or {})
            if strict_labels:
                _refuse_test_only_classes(made, test, names, where, by_group=groups is not None)
            _normalise_split(work_file, n, shape, lo, span, {tmp / "x_train.npy": train, tmp / "x_test.npy": test})
        work.unlink()
        np.save(tmp / "min_values.npy", np.float32(lo))
        np.save(tmp / "max_values.npy", np.float32(lo + span))
        info = {
            **(meta or {}),
            **({"test_audio": {**meta["test_audio"], "clips": [int(i) for i in test]}} if meta and "test_audio" in meta
               else {}),
            "vaekit_version": __version__,
            "normalization": "global min-max over all clips, in dB",
            "split": {"by": "speaker" if groups is not None else "random", "test_fraction": test_fraction,
                      "seed": seed},
            "train_files": [names[i] for i in train],
            "test_files": [names[i] for i in test],
            "skipped": skipped_list,
        }
        if made:
            info["labels"] = data.write_labels(tmp, made)
        write_meta(tmp, audio, info)
    return PrepareSummary(Path(out_dir), n, len(train), len(test), shape, skipped_list, time.perf_counter() - start,
                          {name: len(lab.classes) for name, lab in made.items()})


def _refuse_test_only_classes(made: dict, test: np.ndarray, names: list[str], where: str, by_group: bool) -> None:
    for name, lab in made.items():
        missing = ~np.isin(lab.test, lab.train)
        if missing.any():
            row = int(np.argmax(missing))
            raise DataError(f"{Path(where) / names[test[row]]}: --label {name}: class {lab.classes[lab.test[row]]!r} is "
                            "only in the test split, so a model conditioned on it would never see it in training"
                            + ("; --split-by speaker puts each folder on one side only" if by_group else ""))


def _normalise_split(work_file, n: int, shape, lo: float, span: float, outputs: dict) -> None:
    """One pass over the work file in blocks: normalise, append each split's rows (sorted) to its .npy."""
    from numpy.lib import format as npy

    row_bytes = 4 * shape[0] * shape[1]
    files, members = [], []
    for path, rows in outputs.items():
        f = open(path, "wb")
        npy.write_array_header_1_0(f, {"descr": npy.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                                       "shape": (len(rows), *shape)})
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        files.append(f)
        members.append(mask)
    try:
        for s in range(0, n, WRITE_BLOCK):
            e = min(n, s + WRITE_BLOCK)
            raw = os.pread(work_file.fileno(), (e - s) * row_bytes, s * row_bytes)
            block = (np.frombuffer(raw, dtype="<f4").reshape(e - s, *shape) - np.float32(lo)) / np.float32(span)
            for f, mask in zip(files, members):
                f.write(block[mask[s:e]].astype("<f4", copy=False).tobytes())
    finally:
        for f in files:
            f.close()


def speaker_of(relative: Path) -> str:
    """A clip's speaker: its parent folder (AudioMNIST: ``01/0_01_0.wav`` → ``01``); top-level files: ``""``."""
    return relative.parent.as_posix() if relative.parent != Path(".") else ""


def prepare_folder(audio_dir, out_dir, audio: AudioParams | None = None, *, split_by: str = "random",
                   test_fraction: float = 0.25, seed: int = 0, workers: int | None = None,
                   force: bool = False, progress: bool = True, labels=()) -> PrepareSummary:
    """``vaekit prepare AUDIO_DIR OUT_DIR`` as a function (see the module docstring).

    Unreadable, corrupt or empty files are skipped and listed in the summary and in
    ``dataset.json``; a folder without audio, an existing ``out_dir`` without ``force`` and
    a folder where no file is usable are :class:`DataError`.  ``labels``: ``NAME=SOURCE`` items
    (``--label``; see :func:`vaekit.data.parse_label_specs`) or ``{NAME: SOURCE}``.
    """
    from tqdm import tqdm

    audio = audio or AudioParams()
    audio_dir = Path(audio_dir)
    specs = dict(labels) if isinstance(labels, dict) else data.parse_label_specs(labels)
    if split_by not in SPLITS:
        raise ConfigError(f"--split-by {split_by!r}: expected one of {', '.join(SPLITS)}")
    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: no such directory")
    check_output_dir(out_dir, force)
    paths = find_audio(audio_dir)
    if not paths:
        raise DataError(f"{audio_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder tree")
    names = [p.relative_to(audio_dir).as_posix() for p in paths]
    data.label_values(names, specs, audio_dir.resolve())  # a file without the field asked for: before any work
    groups = [speaker_of(Path(n)) for n in names] if split_by == "speaker" else None
    bar = tqdm(total=len(paths), unit="file", desc="prepare", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    # What reloads each test clip's waveform exactly (the reference of the audio metrics): read_clip on the
    # file under this folder with the dataset's audio parameters.
    meta = {"source": str(audio_dir.resolve()),
            "test_audio": {"kind": "files", "root": str(audio_dir.resolve()), "reader": "vaekit.prepare.read_clip"}}
    return write_dataset(out_dir, len(paths), convert_files(paths, audio, workers), names, audio, groups=groups,
                         test_fraction=test_fraction, seed=seed, force=force, meta=meta, progress=bar, labels=specs)
