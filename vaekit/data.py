"""Datasets in the notebook's format, and the checks that make bad data a one-line error.

A notebook-format directory holds

- ``x_train.npy``, ``x_test.npy``: float arrays (N, H, W) in [0, 1] (mel bands × frames);
- ``min_values.npy``, ``max_values.npy``: scalars or arrays that broadcast to (H, W);
  dB = x · (max − min) + min, as in the notebook;
- optionally ``dataset.json`` (written by ``vaekit prepare``) with ``"audio"``: the
  :class:`~vaekit.audio.AudioParams` the spectrograms were made with.  Without it the
  notebook's parameters are assumed.

Arrays are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams
from vaekit.errors import DataError

ARRAY_FILES = ("x_train.npy", "x_test.npy", "min_values.npy", "max_values.npy")
META_FILE = "dataset.json"
#: How far outside [0, 1] normalised values may stray before the data is refused.
RANGE_TOLERANCE = 0.05


@dataclass
class Dataset:
    """Normalised spectrograms and what is needed to turn them back into sound."""

    x_train: np.ndarray
    x_test: np.ndarray
    min_values: np.ndarray
    max_values: np.ndarray
    audio: AudioParams = field(default_factory=AudioParams)
    source: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self, self.source or "dataset")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one spectrogram: (n_mels, frames)."""
        return tuple(self.x_train.shape[1:])

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Normalised spectrograms (N, H, W) → mel power in dB, as the notebook does it."""
        return denormalize(x, self.min_values, self.max_values)

    def normalize(self, db: np.ndarray) -> np.ndarray:
        """Mel dB (N, H, W) → the [0, 1] scale of this dataset."""
        return normalize(db, self.min_values, self.max_values)


def denormalize(x: np.ndarray, min_values, max_values) -> np.ndarray:
    """Normalised spectrograms → mel dB: ``x · (max − min) + min``, as the notebook does it."""
    return x * (max_values - min_values) + min_values


def normalize(db: np.ndarray, min_values, max_values) -> np.ndarray:
    """Mel dB → the [0, 1] scale of ``min_values``/``max_values`` (a zero span counts as 1)."""
    span = np.where(max_values - min_values == 0, 1.0, max_values - min_values)
    return (db - min_values) / span


#: The first bytes of every .npy file (numpy.lib.format.MAGIC_PREFIX).
NPY_MAGIC = b"\x93NUMPY"


def _load_array(path: Path) -> np.ndarray:
    """A numeric ``.npy`` array, never unpickled; :class:`DataError` naming ``path`` otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head != NPY_MAGIC:
        # np.load hands anything without the magic string to pickle (refused, allow_pickle=False) and
        # would call random bytes "pickled data": say what the file is not instead.
        what = " (it is a .npz archive; save each array with np.save)" if head.startswith(b"PK\x03\x04") else ""
        raise DataError(f"{path}: not a valid .npy file (it does not start with the .npy magic string "
                        f"\\x93NUMPY){what}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(f"{path}: holds Python objects (a pickled or object array); save a numeric array") from None
        raise DataError(f"{path}: not a readable .npy array: {exc}") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npy array: {exc}") from None


def validate(ds: Dataset, where: str) -> None:
    """Raise :class:`DataError` naming the file (or dataset) and the problem; cast in place."""
    base = Path(where)
    for name in ("x_train", "x_test"):
        x = getattr(ds, name)
        src = base / f"{name}.npy" if base.is_dir() else f"{where} {name}"
        if not isinstance(x, np.ndarray) or x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{src}: expected a numeric array, got {getattr(x, 'dtype', type(x).__name__)}")
        _refuse_complex(x, src)
        if x.ndim != 3:
            raise DataError(f"{src}: expected a 3-D array (N, height, width), got shape {x.shape}")
        if x.shape[0] == 0 or x.size == 0:
            raise DataError(f"{src}: the array is empty (shape {x.shape})")
        x = x.astype(np.float32, copy=False)
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(x.size - finite.sum())
            first = int(np.argwhere(~finite)[0][0])
            raise DataError(f"{src}: {bad} NaN or Inf value(s), the first in spectrogram {first}")
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise DataError(
                f"{src}: values must be normalised to [0, 1], found [{lo:.3g}, {hi:.3g}] "
                "(use `vaekit prepare` or divide by the range)"
            )
        setattr(ds, name, x)
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(
            f"{where}: x_train spectrograms are {ds.x_train.shape[1]}×{ds.x_train.shape[2]} but "
            f"x_test ones are {ds.x_test.shape[1]}×{ds.x_test.shape[2]}; they must match"
        )
    hw = ds.x_train.shape[1:]
    for name in ("min_values", "max_values"):
        v = np.asarray(getattr(ds, name))
        src = base / f"{name}.npy" if base.is_dir() else f"{where} {name}"
        if v.dtype == object or not np.issubdtype(v.dtype, np.number):
            raise DataError(f"{src}: expected numbers, got {v.dtype}")
        _refuse_complex(v, src)
        try:
            np.broadcast_to(v, hw)
        except ValueError:
            raise DataError(f"{src}: shape {v.shape} does not broadcast to the spectrogram size {hw}") from None
        if not np.isfinite(v).all():
            raise DataError(f"{src}: holds NaN or Inf")
        setattr(ds, name, v.astype(np.float32))


def _refuse_complex(x: np.ndarray, src) -> None:
    # Casting to float32 would keep the real part and drop the rest without a word (NumPy only warns).
    if np.iscomplexobj(x):
        raise DataError(f"{src}: holds complex numbers ({x.dtype}); spectrograms must be real "
                        "(save the magnitude or power, e.g. np.abs(x))")


def read_meta(directory: Path) -> dict:
    """The ``dataset.json`` of a prepared directory, or ``{}`` for plain notebook data."""
    path = Path(directory) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    return meta


def is_notebook_dir(path) -> bool:
    """Whether ``path`` looks like notebook-format data (it has x_train.npy)."""
    return path is not None and (Path(path) / "x_train.npy").is_file()


def load_notebook_dir(directory, audio: AudioParams | None = None) -> Dataset:
    """Load and check a notebook-format directory (see the module docstring)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    arrays = {f[:-4]: _load_array(directory / f) for f in ARRAY_FILES}
    meta = read_meta(directory)
    if "audio" in meta:
        audio = AudioParams.from_dict(meta["audio"], source=str(directory / META_FILE))
    return Dataset(**arrays, audio=audio or AudioParams(), source=str(directory), info=meta)


def write_meta(directory, audio: AudioParams, extra_meta: dict | None = None) -> None:
    """Write ``dataset.json``: the audio parameters under ``"audio"`` plus ``extra_meta``."""
    meta = {"audio": audio.to_dict(), **(extra_meta or {})}
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))


def check_output_dir(out_dir, force: bool = False) -> Path:
    """Refuse an existing ``out_dir`` unless ``force``; with ``force`` only replace what looks like ours.

    ``--force`` must never delete a folder of someone's files: an existing ``out_dir`` is
    replaced only if it is empty or holds notebook-format data.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        if not force:
            raise DataError(f"{out_dir}: already exists; pass --force to replace it")
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a directory; not replacing it")
        if any(out_dir.iterdir()) and not (is_notebook_dir(out_dir) or (out_dir / META_FILE).is_file()):
            raise DataError(f"{out_dir}: exists and does not hold a dataset; not replacing it, even with --force")
    if not out_dir.parent.is_dir():
        raise DataError(f"{out_dir}: its parent directory does not exist")
    return out_dir


@contextmanager
def staged_output_dir(out_dir, force: bool = False):
    """Yield a hidden temporary sibling of ``out_dir``; rename it to ``out_dir`` when the block succeeds.

    A dataset directory therefore either is complete or does not exist: an error or an
    interrupt removes the temporary directory, and even a killed process leaves only a
    hidden ``.NAME.partial-*`` directory that no loader takes for data.
    """
    out_dir = check_output_dir(out_dir, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if force and out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "data")
        # Without force this fails if another process made out_dir meanwhile: theirs stays.
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            os.replace(old / "data", out_dir)  # put the previous dataset back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
