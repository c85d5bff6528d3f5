"""Datasets in the notebook's format, and the checks that make bad data a one-line error.

A notebook-format directory holds

- ``x_train.npy``, ``x_test.npy``: float arrays (N, H, W) in [0, 1] (mel bands × frames);
- ``min_values.npy``, ``max_values.npy``: scalars or arrays that broadcast to (H, W);
  dB = x · (max − min) + min, as in the notebook;
- optionally ``dataset.json`` (written by ``vaekit prepare``) with ``"audio"``: the
  :class:`~vaekit.audio.AudioParams` the spectrograms were made with.  Without it the
  notebook's parameters are assumed;
- optionally labels (:class:`Labels`): ``y_train.npy``, ``y_test.npy``, integer class indices in the
  rows' order, (N,) for one label or (N, K) for K, named with their classes by ``dataset.json``'s
  ``"labels"`` (``[{"name", "classes", "source"}, ...]``, one per column) or, for one label called
  ``label``, by ``classes.txt`` (a class name a line; without it the classes are ``0``…``max``).

Arrays are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams
from vaekit.errors import ConfigError, DataError
from vaekit.staging import staged_folder

ARRAY_FILES = ("x_train.npy", "x_test.npy", "min_values.npy", "max_values.npy")
META_FILE = "dataset.json"
LABEL_FILES = ("y_train.npy", "y_test.npy")
CLASSES_FILE = "classes.txt"
#: A label's name: it becomes ``--condition NAME``, a param key and a JSON key.
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
#: Where a label's classes come from in ``vaekit prepare --label NAME=SOURCE``.
LABEL_SOURCES = ("folder", "field:K")
#: How far outside [0, 1] normalised values may stray before the data is refused.
RANGE_TOLERANCE = 0.05


@dataclass
class Labels:
    """One categorical label of every clip: class indices into ``classes``, in the rows' order of each split."""

    name: str
    classes: list[str]
    train: np.ndarray
    test: np.ndarray
    #: Where the classes came from (``folder``, ``field:0``, ``y_train.npy``…), as recorded.
    source: str = ""

    def index(self, value, what: str = "--label") -> int:
        """The class index of the class name ``value``; :class:`DataError` listing the classes otherwise."""
        return int(class_indices([value], self.classes, self.name, what)[0])

    def to_meta(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "source": self.source}


def class_indices(values, classes, name: str, what: str) -> np.ndarray:
    """Class names → their indices in ``classes``: the one check of a requested label, wherever it comes from.

    ``what`` is the flag or field that gave them (``--label``, ``label``, ``label[2]``); an unknown class is
    a :class:`DataError` of one line that lists the classes.
    """
    lookup = {c: i for i, c in enumerate(classes)}
    out = []
    for k, value in enumerate(values):
        where = what if len(values) == 1 else f"{what}[{k}]"
        if not isinstance(value, str):
            raise DataError(f"{where}: expected a class name of {name} (a string), got {_short(value)}")
        if value not in lookup:
            raise DataError(f"{where}: {_short(value)} is not a class of {name}; its classes: {', '.join(classes)}")
        out.append(lookup[value])
    return np.asarray(out, dtype=np.int64)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


@dataclass
class Dataset:
    """Normalised spectrograms and what is needed to turn them back into sound; optionally labels by name."""

    x_train: np.ndarray
    x_test: np.ndarray
    min_values: np.ndarray
    max_values: np.ndarray
    audio: AudioParams = field(default_factory=AudioParams)
    source: str = ""
    info: dict = field(default_factory=dict)
    #: Label name → :class:`Labels` (``{}``: no labels).
    labels: dict = field(default_factory=dict)

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
        setattr(ds, name, _valid_spectrograms(getattr(ds, name), _source(base, where, name)))
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(
            f"{where}: x_train spectrograms are {ds.x_train.shape[1]}×{ds.x_train.shape[2]} but "
            f"x_test ones are {ds.x_test.shape[1]}×{ds.x_test.shape[2]}; they must match"
        )
    hw = ds.x_train.shape[1:]
    for name in ("min_values", "max_values"):
        setattr(ds, name, _valid_scale(getattr(ds, name), _source(base, where, name), hw))
    for key, labels in ds.labels.items():
        _validate_labels(ds, key, labels, base if base.is_dir() else None, where)


def _source(base: Path, where: str, name: str):
    """How an error names array ``name``: its file in a dataset folder, else the dataset and the name."""
    return base / f"{name}.npy" if base.is_dir() else f"{where} {name}"


def _valid_spectrograms(x, src) -> np.ndarray:
    """``x`` as float32 if it is a non-empty (N, height, width) array of finite values in [0, 1]."""
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
    return x


def _valid_scale(values, src, hw: tuple) -> np.ndarray:
    """``values`` (``min_values`` or ``max_values``) as float32 if finite numbers that broadcast to ``hw``."""
    v = np.asarray(values)
    if v.dtype == object or not np.issubdtype(v.dtype, np.number):
        raise DataError(f"{src}: expected numbers, got {v.dtype}")
    _refuse_complex(v, src)
    try:
        np.broadcast_to(v, hw)
    except ValueError:
        raise DataError(f"{src}: shape {v.shape} does not broadcast to the spectrogram size {hw}") from None
    if not np.isfinite(v).all():
        raise DataError(f"{src}: holds NaN or Inf")
    return v.astype(np.float32)


def _validate_labels(ds: Dataset, key: str, labels: Labels, directory: Path | None, where: str) -> None:
    """Each split's class indices: integers, one per clip, within the classes; cast to int64 in place."""
    if not isinstance(labels, Labels) or labels.name != key or not LABEL_NAME.fullmatch(str(key)):
        raise DataError(f"{where}: labels must map a name (letters, digits, _ and -) to a vaekit.data.Labels "
                        f"of that name, got {key!r}")
    classes = labels.classes
    if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{where}: label {key}: classes must be distinct non-empty strings, got {_short(classes)}")
    for split, x in (("train", ds.x_train), ("test", ds.x_test)):
        y = getattr(labels, split)
        src = directory / f"y_{split}.npy" if directory is not None else f"{where} label {key} ({split})"
        if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            shown = f"{y.dtype} of shape {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
            raise DataError(f"{src}: label {key}: expected integer class indices, one per clip, got {shown}")
        if len(y) != len(x):
            raise DataError(f"{src}: label {key}: {len(y)} labels for the {len(x)} spectrograms of x_{split}")
        bad = (y < 0) | (y >= len(classes))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{src}: label {key}: row {row} holds class index {int(y[row])}, outside 0-{len(classes) - 1} "
                            f"({len(classes)} classes)")
        setattr(labels, split, y.astype(np.int64))


def check_condition(ds: Dataset, name: str) -> Labels:
    """The labels ``--condition NAME`` conditions on; a one-line error if the dataset lacks them or cannot
    condition on them (a class only in the test split)."""
    if name not in ds.labels:
        have = f"its labels: {', '.join(ds.labels)}" if ds.labels else \
            "it has none (vaekit prepare --label NAME=SOURCE adds them; the synthetic voices have speaker)"
        raise ConfigError(f"--condition {name}: {ds.source or 'the dataset'} has no label {name!r}; {have}")
    problem = class_only_in_test(ds, name)
    if problem:
        raise DataError(problem)
    return ds.labels[name]


def class_only_in_test(ds: Dataset, name: str) -> str | None:
    """Why label ``name`` cannot condition a model: a class in the test split that training never shows
    (naming the first such clip's file), or None when every test class is also a training class."""
    labels = ds.labels[name]
    missing = ~np.isin(labels.test, labels.train)
    if not missing.any():
        return None
    row = int(np.argmax(missing))
    files = ds.info.get("test_files") if isinstance(ds.info, dict) else None
    source = Path(ds.source) if ds.source else None
    if isinstance(files, list) and len(files) == len(labels.test):
        where = f"{files[row]} (test clip {row}, listed in {source / META_FILE if source else META_FILE})"
    else:
        where = f"{source / 'y_test.npy' if source else 'y_test'}, row {row}"
    return (f"{where}: class {labels.classes[labels.test[row]]!r} of label {name} is only in the test split; "
            "a model conditioned on it never sees it in training")


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
    return Dataset(**arrays, audio=audio or AudioParams(), source=str(directory), info=meta,
                   labels=load_labels(directory, meta))


def load_labels(directory: Path, meta: dict) -> dict[str, Labels]:
    """The labels of a notebook-format directory (see the module docstring); ``{}`` without ``y_train.npy``.

    Checks what the files alone can say (names, classes, columns); :func:`validate` checks the indices.
    """
    declared = meta.get("labels")
    has_arrays = [(directory / f).exists() for f in LABEL_FILES]
    if not any(has_arrays) and declared is None:
        return {}
    for f, present in zip(LABEL_FILES, has_arrays):
        if not present:
            raise DataError(f"{directory / f}: file not found (labels need both y_train.npy and y_test.npy)")
    y = {split: _load_array(directory / f) for split, f in zip(("train", "test"), LABEL_FILES)}
    for split, arr in y.items():
        if arr.ndim not in (1, 2):
            raise DataError(f"{directory / f'y_{split}.npy'}: expected class indices of shape (N,) or (N, labels), "
                            f"got shape {arr.shape}")
    columns = 1 if y["train"].ndim == 1 else y["train"].shape[1]
    if y["test"].ndim != y["train"].ndim or (y["test"].ndim == 2 and y["test"].shape[1] != columns):
        raise DataError(f"{directory / 'y_test.npy'}: shape {y['test'].shape} does not match y_train.npy's "
                        f"{y['train'].shape} (the same labels, one column each)")
    specs = _label_specs(directory, declared, columns, y)
    out = {}
    for k, spec in enumerate(specs):
        train, test = ((arr if arr.ndim == 1 else arr[:, k]) for arr in (y["train"], y["test"]))
        out[spec["name"]] = Labels(spec["name"], spec["classes"], train, test, spec.get("source", "y_train.npy"))
    return out


def _label_specs(directory: Path, declared, columns: int, y: dict) -> list[dict]:
    """``[{"name", "classes"[, "source"]}]`` per column: from dataset.json, else classes.txt, else 0…max."""
    meta_file = directory / META_FILE
    if declared is not None:
        if (not isinstance(declared, list) or len(declared) != columns
                or not all(isinstance(d, dict) and isinstance(d.get("classes"), list) for d in declared)):
            raise DataError(f"{meta_file}: \"labels\" must list one {{\"name\", \"classes\"}} object per column of "
                            f"y_train.npy ({columns})")
        names = [d.get("name") for d in declared]
        for name in names:
            if not isinstance(name, str) or not LABEL_NAME.fullmatch(name):
                raise DataError(f"{meta_file}: label name {name!r}: letters, digits, _ and - only, "
                                "starting with a letter or _")
        if len(set(names)) != len(names):
            raise DataError(f"{meta_file}: label names repeat: {', '.join(names)}")
        return [{**d, "classes": [str(c) for c in d["classes"]]} for d in declared]
    if columns != 1:
        raise DataError(f"{meta_file}: needed to name the {columns} labels of y_train.npy "
                        '("labels": [{"name", "classes"}, ...], one per column)')
    classes_file = directory / CLASSES_FILE
    if classes_file.exists():
        try:
            classes = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{classes_file}: cannot be read: {exc}") from None
        source = CLASSES_FILE
    else:
        top = max((int(a.max()) for a in y.values() if a.size and np.issubdtype(a.dtype, np.integer)), default=0)
        classes, source = [str(i) for i in range(max(top, 0) + 1)], "y_train.npy"
    return [{"name": "label", "classes": classes, "source": source}]


def write_labels(directory, labels: dict[str, Labels]) -> list[dict]:
    """Write ``y_train.npy``/``y_test.npy`` (N, K) int32, column k the k-th label; return dataset.json's ``"labels"``."""
    if not labels:
        return []
    for split in ("train", "test"):
        np.save(Path(directory) / f"y_{split}.npy",
                np.stack([getattr(lab, split) for lab in labels.values()], axis=1).astype(np.int32))
    return [lab.to_meta() for lab in labels.values()]


def parse_label_specs(items, flag: str = "--label") -> dict[str, str]:
    """``["digit=field:0", "speaker=folder"]`` (or one comma-separated string) → ``{"digit": "field:0", …}``.

    :class:`vaekit.errors.ConfigError` naming ``flag`` for a malformed item, name or source.
    """
    if isinstance(items, str):
        items = [part for part in items.split(",") if part.strip()]
    out: dict[str, str] = {}
    for item in items:
        name, sep, source = (part.strip() for part in str(item).partition("="))
        if not sep or not name or not source:
            raise ConfigError(f"{flag} {item!r}: expected NAME=SOURCE, SOURCE one of {', '.join(LABEL_SOURCES)} "
                              "(e.g. digit=field:0)")
        if not LABEL_NAME.fullmatch(name):
            raise ConfigError(f"{flag} {item!r}: a label name has letters, digits, _ and - only, starting with a "
                              "letter or _")
        if name in out:
            raise ConfigError(f"{flag} {item!r}: label {name} is given twice")
        if source != "folder" and not re.fullmatch(r"field:\d{1,3}", source):
            raise ConfigError(f"{flag} {item!r}: unknown source {source!r}; SOURCE is folder (the file's parent "
                              "folder) or field:K (the K-th _-separated field of the file name, from 0)")
        out[name] = source
    return out


def label_values(names: list[str], specs: dict[str, str], root) -> dict[str, list[str]]:
    """Each clip's class under each label, from its relative path ``names[i]`` (see :func:`parse_label_specs`).

    :class:`DataError` naming the file (``root/NAME``) whose name lacks the field or folder asked for.
    """
    out: dict[str, list[str]] = {}
    for label, source in specs.items():
        values = []
        for name in names:
            path = Path(name)
            if source == "folder":
                value = path.parent.as_posix() if path.parent != Path(".") else ""
                why = "is not in a subfolder"
            else:
                k = int(source.split(":", 1)[1])
                fields = path.stem.split("_")
                value = fields[k] if k < len(fields) else ""
                why = (f"has {len(fields)} _-separated field(s) in its name {path.stem!r}, none at {k}"
                       if k >= len(fields) else f"has an empty field {k} in its name {path.stem!r}")
            if not value:
                raise DataError(f"{Path(root) / name}: --label {label}={source}: the file {why}")
            values.append(value)
        out[label] = values
    return out


def natural_key(text: str):
    """Sort key that puts ``2`` before ``10`` (classes are listed in this order)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def labels_from_values(values: dict[str, list[str]], train: np.ndarray, test: np.ndarray,
                       specs: dict[str, str]) -> dict[str, Labels]:
    """:class:`Labels` of the clips ``train`` and ``test`` (indices into each list of ``values``)."""
    out = {}
    for name, vals in values.items():
        classes = sorted(set(vals[i] for i in np.concatenate([train, test])), key=natural_key)
        lookup = {c: i for i, c in enumerate(classes)}
        arr = np.asarray([lookup.get(v, -1) for v in vals], dtype=np.int64)
        out[name] = Labels(name, classes, arr[train], arr[test], specs.get(name, ""))
    return out


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
    hidden ``.NAME.partial-*`` directory that no loader takes for data
    (:func:`vaekit.staging.staged_folder`).
    """
    out_dir = check_output_dir(out_dir, force)
    with staged_folder(out_dir, replace=force) as tmp:
        yield tmp
