"""Datasets: ``synthetic`` (the default), ``notebook`` (see :mod:`vaekit.data`) and ``audio-folder``.

``synthetic`` and ``audio-folder`` write notebook-format data into the cache
(``VAEKIT_CACHE``, else ``~/.cache/vaekit``) once, keyed by everything that determines it,
and load it from there afterwards.  Both take the audio parameters as options, as ``vaekit prepare``
does (``sr``, ``n_mels``, ``n_fft``, ``hop_length``, ``duration``; ``hop_length=0``: the notebook's hop,
50 frames a clip); the ``audio`` argument of their build functions is not used.
"""

import vaekit
from vaekit import data


def build_notebook(path, audio):
    """A notebook-format directory: x_train.npy, x_test.npy, min_values.npy, max_values.npy (+ dataset.json)."""
    if path is None:
        raise ValueError("the notebook dataset needs --data DIR")
    return data.load_notebook_dir(path, audio)


def audio_options(sr, n_mels, n_fft, hop_length, duration):
    """The ``AudioParams`` of a dataset's audio options (``hop_length`` 0: the notebook's, 50 frames a clip)."""
    from vaekit.errors import ConfigError
    from vaekit.prepare import audio_params

    try:
        return audio_params(sr=sr, duration=duration, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length or None)
    except ConfigError as exc:  # "audio parameters: ..." → name the options
        raise ConfigError(f"--option dataset.*: {str(exc).removeprefix('audio parameters: ')}") from None


#: The audio options of ``synthetic`` and ``audio-folder`` (the notebook's values), and their ranges: a clip
#: must hold at least one frame, and the sizes stay where one spectrogram still fits in memory.
AUDIO_RANGES = {"sr": {"min": 1000, "max": 384_000}, "n_mels": {"min": 1, "max": 1024},
                "n_fft": {"min": 16, "max": 65_536}, "hop_length": {"min": 0, "max": 1_000_000},
                "duration": {"above": 0, "max": 600}}


def build_synthetic(path, audio, clips=4000, seed=0, speakers=24, test_fraction=0.25, progress=True,
                    sr=22050, n_mels=50, n_fft=2048, hop_length=0, duration=1.0):
    """Built-in synthetic voices (source-filter speech, 80-300 Hz speakers), generated on first use and cached."""
    from vaekit import synth
    from vaekit.errors import ConfigError

    audio = audio_options(sr, n_mels, n_fft, hop_length, duration)
    if clips < 2 or speakers < 1:
        raise ConfigError(f"dataset synthetic: clips must be ≥ 2 and speakers ≥ 1, got clips={clips}, speakers={speakers}")
    target = synth.synthetic_dir(clips, seed, speakers, audio, test_fraction)
    return _cached(target, lambda: synth.write_synthetic(target, clips, seed, speakers, audio, test_fraction,
                                                         progress=progress), audio)


def build_audio_folder(path, audio, split_by="random", test_fraction=0.25, seed=0, workers=0, labels="",
                       progress=True, sr=22050, n_mels=50, n_fft=2048, hop_length=0, duration=1.0):
    """A folder tree of audio files (wav, flac, ogg), prepared like `vaekit prepare` into the cache on first use.

    ``labels``: ``vaekit prepare``'s ``--label`` items, comma-separated (``digit=field:0,speaker=folder``).
    The cache key covers the folder, the audio parameters, these options and every file's
    relative path, size and modification time: change a file and it is prepared again.
    """
    from pathlib import Path

    from vaekit import prepare, synth
    from vaekit.errors import DataError

    audio = audio_options(sr, n_mels, n_fft, hop_length, duration)
    if path is None:
        raise DataError("the audio-folder dataset needs --data AUDIO_DIR")
    specs = data.parse_label_specs(labels, "--option dataset.labels")
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"{path}: no such directory")
    files = prepare.find_audio(root)
    if not files:
        raise DataError(f"{path}: no audio files ({', '.join(prepare.AUDIO_EXTENSIONS)}) in this folder tree")
    stats = [(f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = synth.params_key(dict(folder=str(root), audio=audio.to_dict(), split_by=split_by,
                                test_fraction=test_fraction, seed=seed, files=stats, **({"labels": specs} if specs else {})))
    target = synth.cache_root() / "prepared" / f"{root.name}-{key}"
    return _cached(target, lambda: prepare.prepare_folder(root, target, audio, split_by=split_by,
                                                          test_fraction=test_fraction, seed=seed,
                                                          workers=workers, progress=progress, labels=specs), audio)


def _cached(target, make, audio):
    """Load ``target`` if it is complete, else ``make()`` it first (another process may win the race)."""
    from vaekit.errors import DataError

    if not data.is_notebook_dir(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            make()
        except (OSError, DataError):
            if not data.is_notebook_dir(target):  # not a concurrent writer that finished first
                raise
    return data.load_notebook_dir(target, audio)


def is_audio_folder(path):
    from vaekit.prepare import has_audio

    return has_audio(path)


@vaekit.hookimpl
def register_datasets(register):
    from vaekit.prepare import SPLITS

    seed = {"min": 0, "max": 2**32 - 1}  # NumPy seeds
    split = {"above": 0, "below": 1}  # both sides must keep a clip
    register("synthetic", build_synthetic, options={
        "clips": {"min": 2, "max": 10_000_000}, "seed": seed, "speakers": {"min": 1, "max": 1_000_000},
        "test_fraction": split, **AUDIO_RANGES})
    register("notebook", build_notebook, detect=data.is_notebook_dir)
    register("audio-folder", build_audio_folder, detect=is_audio_folder, options={
        "split_by": {"choices": list(SPLITS)}, "test_fraction": split, "seed": seed,
        "workers": {"min": 0, "max": 4096}, **AUDIO_RANGES})
