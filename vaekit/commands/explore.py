"""``vaekit explore``: a local page to see and hear one logged run's latent space, and the JSON API under it.

At start-up the run's model and vocoder (``--vocoder``, else the run's own, with its options) and its
test set (``--data``, else the run's ``--data``) are loaded once.  The test clips (all of them, or
:data:`MAX_POINTS` evenly spaced ones) are encoded; the map is the first two principal components of
their latent means μ.  Each point has a label: the dataset's own labels (``vaekit prepare --label``, the
synthetic voices' ``speaker``), a conditional run's condition first, which colours the map at first;
the clip's speaker (its parent folder) or the first ``_``-separated field of its file name, where the
dataset's ``dataset.json`` lists the test files; and its reconstruction error in dB.

A conditional run (``vaekit run --condition NAME``) encodes and decodes each clip with its own class;
decoding a z from the sliders, and the ends of an interpolation between z, take a class too
(``"label"``, ``"label_a"``/``"label_b"``), which the page's label picker sets.

Every request's values are checked before any model call: a bad one is a 4xx answer whose JSON body
is ``{"error": "one line"}``.  No request value ever becomes a file path: the page's files are a fixed
set, and sounds kept in the run get names made here (``generated/explore/keep_…``).  The model and the
vocoder are called under one lock from Starlette's thread pool, so requests never share them at once
and the event loop never waits on them.

The "original" sound of a clip is its test spectrogram vocoded with the same vocoder as the
reconstruction (a dataset holds spectrograms, not audio), so the two differ only by the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from vaekit.audio import wav_bytes
from vaekit.errors import DataError, VaekitError, one_line
from vaekit.serving import Z_LIMIT

#: At most this many test clips are mapped (evenly spaced over the test set when it has more).
MAX_POINTS = 4000
#: Sliders along principal directions (the page shows at most this many).
SLIDER_PCS = 8
#: Points an interpolation may have, ends included.
MIN_STEPS, MAX_STEPS = 2, 32
#: Silence between the steps of an interpolation sequence, in seconds.
STEP_GAP = 0.15
#: Largest JSON request body, in bytes (a z of a few thousand numbers fits).
MAX_BODY = 256 * 1024
#: Clip parts ``GET /api/clip/INDEX/PART.wav`` serves.
PARTS = ("original", "reconstruction")
#: Where "keep" logs sounds in the run.
KEEP_DIR = "generated/explore"
#: The request bodies the API takes, in one place: form → (keys it must hold, keys it may hold).  Any other
#: key is refused (:func:`body_form`).
#: A conditional run's class names ride along with z (``check_label`` then requires them; an unconditional
#: run refuses them): the ends of a clip-to-clip walk are the clips' own classes.
FORMS = {
    "z": ({"z"}, {"label"}),
    "ends": ({"a", "b"}, {"steps"}),
    "z_ends": ({"z_a", "z_b"}, {"steps", "label_a", "label_b"}),
    "clip": ({"clip"}, {"part"}),
}
#: Which forms each POST endpoint takes (keep: any sound the page can play).
ENDPOINT_FORMS = {"decode": ("z",), "interpolate": ("ends", "z_ends"), "keep": ("z", "ends", "z_ends", "clip")}
#: A run's vocoder too slow to play as a slider moves (librosa's Griffin-Lim, one clip at a time) → the same
#: algorithm batched and vectorised, used with the run's options unless ``--vocoder`` names one.
STAND_INS = {"griffinlim": "fastgl"}
STATIC_DIR = Path(__file__).with_name("explore_static")
#: The page's files (the only files the server reads after start-up) and their media types.
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


class RequestError(VaekitError):
    """A request the API refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Explorer:
    """One run's model, vocoder and mapped test clips, and everything the API computes from them."""

    run: object  # vaekit.logged.LoggedRun
    vocoder: str
    vocode_fn: object
    vocoder_comp: object
    #: Test-set index of each mapped clip, and the clips (normalised, (N, n_mels, frames)).
    indices: np.ndarray
    x: np.ndarray
    mu: np.ndarray
    errors_db: np.ndarray
    names: list[str] | None
    labels: dict[str, list]
    label_kind: str
    test_clips: int
    #: A conditional run's class index of each mapped clip (None: the run is unconditional).
    classes_of: np.ndarray | None = None
    pc_mean: np.ndarray = field(init=False)
    pcs: np.ndarray = field(init=False)
    pc_std: np.ndarray = field(init=False)
    pc_share: np.ndarray = field(init=False)
    xy: np.ndarray = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _row: dict = field(init=False)
    _threadpools: object = field(default=None, init=False)

    def __post_init__(self):
        self.pc_mean, self.pcs, self.pc_std, self.pc_share, self.xy = principal_components(self.mu, max(2, SLIDER_PCS))
        self._row = {int(i): row for row, i in enumerate(self.indices)}

    @property
    def latent_dim(self) -> int:
        return int(self.mu.shape[1])

    # -- what the page reads -------------------------------------------------------
    def info(self) -> dict:
        lo, hi = self.run.color_scale()
        dims_lo = np.minimum(-3.0, self.mu.min(axis=0) - 0.5)
        dims_hi = np.maximum(3.0, self.mu.max(axis=0) + 0.5)
        k = min(SLIDER_PCS, len(self.pcs))
        return {
            "run_id": self.run.run_id, "vocoder": self.vocoder, "latent_dim": self.latent_dim,
            "sample_rate": self.run.audio.sr, "duration": self.run.audio.duration,
            "n_mels": int(self.x.shape[1]), "frames": int(self.x.shape[2]),
            "points": len(self.indices), "test_clips": self.test_clips,
            "label_kind": self.label_kind, "label_kinds": list(self.labels),
            "condition": self.run.condition,
            "db_range": [lo, hi],
            "dims": {"low": _floats(dims_lo), "high": _floats(dims_hi)},
            "pcs": {"mean": _floats(self.pc_mean), "directions": [_floats(p) for p in self.pcs[:k]],
                    "std": _floats(self.pc_std[:k]), "variance_share": _floats(self.pc_share[:k])},
            "limits": {"z": Z_LIMIT, "steps": [MIN_STEPS, MAX_STEPS]},
        }

    def points(self) -> dict:
        points = []
        for row, index in enumerate(self.indices):
            point = {"x": round(float(self.xy[row, 0]), 5), "y": round(float(self.xy[row, 1]), 5),
                     "index": int(index), "label": self.labels[self.label_kind][row],
                     "name": self.names[row] if self.names else f"test clip {int(index)}",
                     "error_db": round(float(self.errors_db[row]), 3)}
            for kind, values in self.labels.items():
                if kind != self.label_kind:
                    point.setdefault("labels", {})[kind] = values[row]
            points.append(point)
        return {"label_kind": self.label_kind, "label_kinds": list(self.labels), "points": points}

    def clip(self, index: int) -> dict:
        """A mapped clip: its name, label, μ, and both spectrograms in dB (n_mels rows, low bands first)."""
        row = self.row(index)
        original = self.run.denormalize(self.x[row])
        recon = self.decode_mel(self.mu[row], self.class_of(row))
        return {
            "index": int(index), "name": self.names[row] if self.names else f"test clip {int(index)}",
            "label": self.labels[self.label_kind][row], "error_db": round(float(self.errors_db[row]), 3),
            "z": _floats(self.mu[row]),
            "condition": self.run.classes[self.classes_of[row]] if self.classes_of is not None else None,
            "wav": {part: f"/api/clip/{int(index)}/{part}.wav" for part in PARTS},
            "spectrogram": {"original": _db_rows(original), "reconstruction": _db_rows(recon)},
        }

    # -- sounds --------------------------------------------------------------------
    def row(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise RequestError(f"index: expected an integer, got {_shown(index)}")
        if index not in self._row:
            raise RequestError(f"index {index}: no such clip on the map (test clips 0-{self.test_clips - 1}, "
                               f"{len(self.indices)} of them mapped)", status=404)
        return self._row[index]

    def check_z(self, value, name: str = "z") -> np.ndarray:
        if not isinstance(value, list):
            raise RequestError(f"{name}: expected a list of {self.latent_dim} numbers, got {_shown(value)}")
        if len(value) != self.latent_dim:
            raise RequestError(f"{name}: expected {self.latent_dim} numbers (the run's latent_dim), got {len(value)}")
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RequestError(f"{name}[{i}]: expected a number, got {_shown(v)}")
            if isinstance(v, int) and abs(v) > Z_LIMIT:  # before float(): JSON integers have no size limit
                raise RequestError(f"{name}[{i}]: must be within ±{Z_LIMIT:g}, got an integer of {len(str(abs(v)))} digits")
            if not math.isfinite(v):
                raise RequestError(f"{name}[{i}]: must be finite, got {v}")
            if abs(v) > Z_LIMIT:
                raise RequestError(f"{name}[{i}]: must be within ±{Z_LIMIT:g}, got {v:g}")
        return np.asarray(value, dtype=np.float32)

    def check_label(self, value, name: str = "label") -> np.ndarray | None:
        """A request's class name → its one-hot row (a conditional run), None for an unconditional run, which takes none."""
        from vaekit.data import class_indices

        if self.run.condition is None:
            if value is not None:
                raise RequestError(f"{name}: this run is unconditional (trained without --condition); send no label")
            return None
        if value is None:
            raise RequestError(f"{name}: this run is conditioned on {self.run.condition['name']}: give a class, one of "
                               f"{', '.join(self.run.classes)}")
        try:
            return self.run.one_hot(class_indices([value], self.run.classes, self.run.condition["name"], name))[0]
        except DataError as exc:
            raise RequestError(str(exc)) from None

    def class_of(self, row: int) -> np.ndarray | None:
        """A mapped clip's own one-hot label (None for an unconditional run)."""
        return None if self.classes_of is None else self.run.one_hot(self.classes_of[row:row + 1])[0]

    def decode_mel(self, z: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
        """One z (d,) (and, conditional, its one-hot label) → the decoded mel spectrogram in dB (n_mels, frames)."""
        return self.decode_mels(z[None], None if label is None else label[None])[0]

    def decode_mels(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        inputs = np.asarray(z, dtype=np.float32)
        if labels is not None:
            inputs = [inputs, np.asarray(labels, dtype=np.float32)]
        with self.lock:
            # predict_on_batch runs the backend's compiled predict step: Model.predict builds a data pipeline
            # per call and an eager call runs op by op, each costing more than the decode itself
            # (docs/explore.md, Latency).
            out = np.asarray(self.run.model.decoder.predict_on_batch(inputs))
        return self.run.denormalize(np.asarray(out, dtype=np.float32)[..., 0] if out.ndim == 4 else out)

    def vocode(self, mel_db: np.ndarray) -> np.ndarray:
        """Mel spectrograms in dB (N, n_mels, frames) → waveforms (N, samples) with the explorer's vocoder."""
        from vaekit.components import vocode

        # One BLAS thread: for one clip's small products a second thread mostly spins, costing CPU and saving
        # no time (benchmarks/explore.py measures it; docs/explore.md, Latency).
        with self.lock, self._blas().limit(limits=1, user_api="blas"):
            return vocode(self.vocoder_comp, self.vocode_fn, mel_db)

    def _blas(self):
        from threadpoolctl import ThreadpoolController

        if self._threadpools is None:
            self._threadpools = ThreadpoolController()  # finds the loaded BLAS libraries once, not per request
        return self._threadpools

    def decode(self, z, label=None) -> np.ndarray:
        """A request's z (and, conditional, class name) → one clip's waveform."""
        z, label = self.check_z(z), self.check_label(label)
        return self.vocode(self.decode_mel(z, label)[None])[0]

    def clip_wave(self, index, part: str) -> np.ndarray:
        row = self.row(index)
        if part not in PARTS:
            raise RequestError(f"part {_shown(part)}: expected one of {', '.join(PARTS)}")
        mel = self.run.denormalize(self.x[row]) if part == "original" else self.decode_mel(self.mu[row], self.class_of(row))
        return self.vocode(mel[None])[0]

    def interpolation_ends(self, body: dict) -> tuple[np.ndarray, np.ndarray, int, tuple]:
        """(z_a, z_b, steps, (label_a, label_b)): the labels one-hot rows of a conditional run, else None."""
        form = body_form(body, "interpolate", self.latent_dim)
        steps = body.get("steps", 8)
        if isinstance(steps, bool) or not isinstance(steps, int) or not MIN_STEPS <= steps <= MAX_STEPS:
            raise RequestError(f"steps: expected an integer from {MIN_STEPS} to {MAX_STEPS}, got {_shown(steps)}")
        if form == "ends":
            ra, rb = self.row(body["a"]), self.row(body["b"])
            return self.mu[ra], self.mu[rb], steps, (self.class_of(ra), self.class_of(rb))
        labels = (self.check_label(body.get("label_a"), "label_a"), self.check_label(body.get("label_b"), "label_b"))
        return self.check_z(body["z_a"], "z_a"), self.check_z(body["z_b"], "z_b"), steps, labels

    def interpolate(self, body: dict) -> np.ndarray:
        """The straight latent walk between two ends (and their labels), ``steps`` clips one after another with short gaps."""
        za, zb, steps, (la, lb) = self.interpolation_ends(body)
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        waves = self.vocode(self.decode_mels((1 - t) * za + t * zb, None if la is None else (1 - t) * la + t * lb))
        gap = np.zeros(int(round(STEP_GAP * self.run.audio.sr)), dtype=np.float32)
        return np.concatenate([part for w in waves for part in (w, gap)][:-1])

    def render(self, body: dict) -> tuple[np.ndarray, dict]:
        """What "keep" logs: a decoded z, an interpolation, or a clip's original or reconstruction."""
        form = body_form(body, "keep", self.latent_dim)
        if form == "z":
            label = {"label": body.get("label")} if self.run.condition else {}
            return self.decode(body["z"], body.get("label")), {"z": _floats(self.check_z(body["z"])), **label}
        if form == "clip":
            part = body.get("part", "reconstruction")
            return self.clip_wave(body["clip"], part), {"clip": body["clip"], "part": part}
        za, zb, steps, _ = self.interpolation_ends(body)
        return self.interpolate(body), {"interpolate": {"z_a": _floats(za), "z_b": _floats(zb), "steps": steps,
                                                        **{k: body[k] for k in ("a", "b", "label_a", "label_b")
                                                           if k in body}}}

    def keep(self, body: dict) -> dict:
        """Log the sound ``body`` describes into the run: ``generated/explore/keep_STAMP.wav`` and its ``.json``.

        ``STAMP`` (:func:`vaekit.runlog.unique_stamp`) is the time and 48 random bits: two servers on one
        run, or two requests at once, never keep under the same name.
        """
        import tempfile

        import mlflow

        from vaekit.runlog import unique_stamp

        wave_, what = self.render(body)
        stem = f"keep_{unique_stamp()}"
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{stem}.wav").write_bytes(wav_bytes(wave_, self.run.audio.sr))
            (Path(tmp) / f"{stem}.json").write_text(json.dumps({"vocoder": self.vocoder, **what}, indent=1))
            mlflow.MlflowClient(self.run.tracking_uri).log_artifacts(self.run.run_id, tmp, KEEP_DIR)
        return {"run_id": self.run.run_id, "artifacts": [f"{KEEP_DIR}/{stem}.wav", f"{KEEP_DIR}/{stem}.json"]}


def body_form(body: dict, endpoint: str, latent_dim: int) -> str:
    """Which of :data:`FORMS` a request body for ``endpoint`` is; a :class:`RequestError` naming what it takes for
    a body that is none of them (a missing key, or a key the endpoint does not take)."""
    for form in ENDPOINT_FORMS[endpoint]:
        required, optional = FORMS[form]
        if required <= body.keys() <= required | optional:
            return form
    expected = {
        "decode": f'{{"z": [{latent_dim} numbers]}}',
        "interpolate": '{"a": INDEX, "b": INDEX} or {"z_a": [...], "z_b": [...]}, and optionally "steps"',
        "keep": 'a decode body, an interpolate body, or {"clip": INDEX, "part": "original"}',
    }[endpoint]
    known = set().union(*(required | optional for required, optional in FORMS.values()))
    unknown = sorted(body.keys() - known)
    got = f"unknown key {_shown(unknown[0])}" if unknown else f"keys {_shown(sorted(body))}"
    raise RequestError(f"expected {expected}; got {got}")


def principal_components(mu: np.ndarray, k: int):
    """(mean, top-``k`` directions (k', d), their standard deviations and shares of the variance, 2-D coordinates
    (N, 2)) of ``mu``.

    Directions have unit length and a fixed sign (the largest entry positive), so a run maps the same
    way every time.  With fewer than 2 dimensions or points, missing coordinates are 0.
    """
    mean = mu.mean(axis=0)
    centred = (mu - mean).astype(np.float64)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    coords = centred @ vt[:2].T
    xy = np.zeros((len(mu), 2))
    xy[:, :coords.shape[1]] = coords
    std = s / math.sqrt(max(len(mu) - 1, 1))
    share = s**2 / max(float(np.sum(s**2)), 1e-30)
    return mean.astype(np.float32), vt[:k].astype(np.float32), std[:k].astype(np.float32), share[:k], xy


def clip_labels(names: list[str] | None, errors_db: np.ndarray, given: dict[str, list] | None = None) -> tuple[dict[str, list], str]:
    """Each clip's labels by kind, and the kind the map is coloured by at first.

    ``given``: the dataset's own labels (class names per clip; a conditional run's condition first),
    which come first; ``speaker``: the parent folder, where the clips are in more than one; ``name
    field``: a file name's first ``_``-separated field, where that groups clips (AudioMNIST's
    ``7_01_3.wav`` → ``7``); ``reconstruction error``: always (dB).
    """
    labels: dict[str, list] = dict(given or {})
    if names:
        paths = [PurePosixPath(n) for n in names]
        parents = [p.parent.as_posix() if p.parent != PurePosixPath(".") else "" for p in paths]
        if len(set(parents)) > 1:
            labels.setdefault("speaker", parents)
        if all("_" in p.stem for p in paths):
            fields = [p.stem.split("_", 1)[0] for p in paths]
            if 1 < len(set(fields)) < len(fields):
                labels.setdefault("name field", fields)
    labels["reconstruction error"] = [round(float(e), 3) for e in errors_db]
    return labels, next(iter(labels))


def test_names(info: dict, n: int) -> list[str] | None:
    """The test clips' file names from ``dataset.json`` (``test_files``), when it lists one per clip."""
    files = info.get("test_files") if isinstance(info, dict) else None
    if isinstance(files, list) and len(files) == n and all(isinstance(f, str) for f in files):
        return files
    return None


def load_explorer(run_ref: str, data=None, vocoder: str | None = None, options=(), tracking_uri: str | None = None,
                  trust_plugins: bool = False, max_points: int = MAX_POINTS, run=None) -> Explorer:
    """Load a run (``open_run`` takes ``run_ref``), its vocoder and test set; encode and map the test clips."""
    from vaekit.logged import load_test_set, open_run

    run = run or open_run(run_ref, tracking_uri, trust_plugins)
    name, comp, fn = pick_vocoder(run, vocoder, options)
    ds = load_test_set(run, data)
    n = len(ds.x_test)
    indices = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    x = ds.x_test[indices]
    names = test_names(ds.info, n)
    names = [names[i] for i in indices] if names else None
    classes_of = None
    if run.condition:
        cond = ds.labels.get(run.condition["name"])
        if cond is None or list(cond.classes) != run.classes:
            raise DataError(f"{ds.source or 'the data'}: has no label {run.condition['name']} with the run's classes, "
                            "which the run's model needs to encode its clips")
        classes_of = cond.test[indices]
    mu, _ = run.model.encode(x[..., None], classes_of)
    mel_hat = run.denormalize(run.model.decode(mu, classes_of)[..., 0])
    errors_db = np.abs(mel_hat - run.denormalize(x)).mean(axis=(1, 2))
    order = sorted(ds.labels, key=lambda k: k != (run.condition or {}).get("name"))  # the condition first
    given = {k: [ds.labels[k].classes[c] for c in ds.labels[k].test[indices]] for k in order}
    labels, kind = clip_labels(names, errors_db, given)
    explorer = Explorer(run, name, fn, comp, indices, x, mu, errors_db, names, labels, kind, n, classes_of)
    explorer.vocode(mel_hat[:1])  # a vocoder that fails does so now, before the URL is printed
    return explorer


def pick_vocoder(run, name: str | None = None, options=()) -> tuple[str, object, object]:
    """(name, component, vocode function): ``name``, else the run's vocoder or its :data:`STAND_INS` stand-in.

    The run's vocoder options carry over to its stand-in where the stand-in has them; ``options``
    (``vocoder.KEY=VALUE``) apply last.
    """
    from vaekit.components import get_component
    from vaekit.logged import build_vocoders

    if name is None and run.config.vocoder in STAND_INS:
        name = STAND_INS[run.config.vocoder]
        with run.hinting_plugins():
            accepted = get_component("vocoder", name).options
        carried = [f"vocoder.{k}={json.dumps(v)}" for k, v in run.config.option("vocoder").items() if k in accepted]
        options = [*carried, *options]
    ((name, (comp, fn)),) = build_vocoders(run, [name] if name else (), options).items()
    return name, comp, fn


def _floats(values) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


def _db_rows(mel_db: np.ndarray) -> list[list[float]]:
    return np.round(np.asarray(mel_db, dtype=np.float64), 1).tolist()


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


# -- the ASGI app -------------------------------------------------------------------

#: Host headers a server on a loopback address answers (any other is a page elsewhere reaching it through DNS rebinding).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: Every answer's caching: the page, its files and its sounds are never reused from the browser's cache.
NO_STORE = {"Cache-Control": "no-store"}


def create_app(explorer: Explorer, loopback_only: bool = True):
    """The Starlette app: the page (``/``, ``/static/…``) and the JSON API (``/api/…``, see docs/explore.md).

    Web pages elsewhere cannot use it through the user's browser: a POST must be ``application/json``
    (which a cross-site page cannot send without a CORS preflight, never granted here), and with
    ``loopback_only`` a request's ``Host`` must name this machine (127.0.0.1, localhost, [::1]).
    """
    app = quiet(Starlette(routes=Api(explorer).routes(), exception_handlers={
        RequestError: refused, HTTPException: http_error, ClientDisconnect: gone, VaekitError: failed, Exception: failed}))
    return this_machine_only(app) if loopback_only else app


class Api:
    """The API's routes over one :class:`Explorer` (the loaded run, its vocoder and the lock they are called
    under): each handler checks the request, then runs the model and the vocoder in Starlette's thread pool."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    def routes(self) -> list:
        return [
            Route("/", page),
            Route("/api/info", self.info),
            Route("/api/points", self.points),
            Route("/api/clip/{index}", self.clip),
            Route("/api/clip/{index}/{part}", self.clip_wav),
            Route("/api/decode", self.decode, methods=["POST"]),
            Route("/api/interpolate", self.interpolate, methods=["POST"]),
            Route("/api/keep", self.keep, methods=["POST"]),
            Route("/static/{name}", static_file),
        ]

    def wav(self, wave_) -> Response:
        return Response(wav_bytes(wave_, self.explorer.run.audio.sr), media_type="audio/wav", headers=NO_STORE)

    async def info(self, request):
        return JSONResponse(self.explorer.info())

    async def points(self, request):
        return JSONResponse(self.explorer.points())

    async def clip(self, request):
        return JSONResponse(await run_in_threadpool(self.explorer.clip, clip_index(request.path_params["index"])))

    async def clip_wav(self, request):
        part = wav_part(request.path_params["part"])
        return self.wav(await run_in_threadpool(self.explorer.clip_wave, clip_index(request.path_params["index"]), part))

    async def decode(self, request):
        body = await read_body(request)
        body_form(body, "decode", self.explorer.latent_dim)
        return self.wav(await run_in_threadpool(self.explorer.decode, body["z"], body.get("label")))

    async def interpolate(self, request):
        return self.wav(await run_in_threadpool(self.explorer.interpolate, await read_body(request)))

    async def keep(self, request):
        return JSONResponse(await run_in_threadpool(self.explorer.keep, await read_body(request)))


# The request parsing every handler shares: each refusal is a RequestError, answered by refused().

async def read_body(request) -> dict:
    """A POST's JSON object: 415 for another media type, 413 past :data:`MAX_BODY` bytes (counted as they arrive,
    whatever Content-Length says), 400 for JSON that does not parse or is not an object."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RequestError(f"request body: Content-Type must be application/json, got {kind or 'none'}", status=415)
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise RequestError(f"request body: larger than {MAX_BODY} bytes", status=413)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise RequestError(f"request body: larger than {MAX_BODY} bytes", status=413)
    return json_object(raw)


def json_object(raw: bytes) -> dict:
    """A request body's bytes → the JSON object they hold (a :class:`RequestError` for anything else)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body: not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError("request body: JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body: expected a JSON object, got {_shown(body)}")
    return body


def clip_index(text: str) -> int:
    """A clip index from a URL path (ASCII digits only)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:  # "²" and "٣" are digits to str.isdigit
        raise RequestError(f"index {text!r}: expected a non-negative integer")
    return int(text)


def wav_part(name: str) -> str:
    """``PART.wav`` from a URL path → one of :data:`PARTS` (404 for any other name)."""
    if not name.endswith(".wav") or name[:-4] not in PARTS:
        raise RequestError(f"{name}: expected one of {', '.join(p + '.wav' for p in PARTS)}", status=404)
    return name[:-4]


# The page's files: a fixed set, so a request never names a file.

async def page(request):
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=NO_STORE)


async def static_file(request):
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        raise HTTPException(404)
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=NO_STORE)


# The exception handlers: every refusal and failure is answered {"error": "one line"}.

def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def refused(request, exc: RequestError):
    return error_response(str(exc), exc.status)


async def http_error(request, exc: HTTPException):
    what = {404: "no such page or API endpoint", 405: f"method {request.method} not allowed here"}
    return error_response(f"{request.url.path}: {what.get(exc.status_code, exc.detail)}", exc.status_code)


async def failed(request, exc: Exception):
    # A plugin's vocoder or model failing on a request: the page shows the line, the console one line
    # too (Starlette then re-raises it for the server's log: quiet() keeps its traceback off the console).
    message = str(exc) if isinstance(exc, VaekitError) else one_line(exc)
    print(f"error: {request.method} {request.url.path}: {message}", file=sys.stderr, flush=True)
    return error_response(message, 500)


async def gone(request, exc: ClientDisconnect):
    return Response(status_code=499)  # the client left before its body came: no one to answer


def this_machine_only(app):
    """``app``, answering 421 to an HTTP request whose ``Host`` is not one of :data:`LOOPBACK_NAMES`."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in LOOPBACK_NAMES:
                refusal = error_response(f"Host {host!r}: this server answers only 127.0.0.1, localhost and [::1]", 421)
                return await refusal(scope, receive, send)
        await app(scope, receive, send)

    return guarded


def quiet(app):
    """``app``, ending a request without a traceback on the console: a failure was answered (a 500 with its
    one-line JSON, and one line on the console, by the app's handler) before Starlette raised it again for the
    server's log; a request cancelled by a stop (Ctrl-C while it runs) is answered 503 if nothing was sent yet."""

    async def guarded(scope, receive, send):
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, sending)
        except asyncio.CancelledError:
            if not started and scope["type"] == "http":
                with contextlib.suppress(Exception):  # the connection may be closing already
                    await JSONResponse({"error": "the server is stopping"}, status_code=503)(scope, receive, send)
        except Exception:
            return

    return guarded


def host_name(header: str) -> str:
    """The name in a ``Host`` header without its port: ``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:80`` → ``[::1]``."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]


# -- the command --------------------------------------------------------------------

def listen_socket(host: str, port: int):
    """A socket bound to ``host:port`` (uvicorn listens on it); one-line :class:`VaekitError` if it cannot be."""
    import socket

    if not 0 < port < 65536:
        raise VaekitError(f"--port {port}: must be between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise VaekitError(f"--host {host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise VaekitError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost): nothing else can reach it."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run_ref: str, port: int = 8765, host: str = "127.0.0.1", data=None, vocoder: str | None = None,
          options=(), tracking_uri: str | None = None, trust_plugins: bool = False, echo=print) -> None:
    """Load the run, print the page's URL, serve until Ctrl-C or SIGTERM (which stop it at once)."""
    import logging

    import uvicorn

    # A stop with a request in flight cancels it (no graceful wait, below): that is what the stop asked for,
    # not an error to report.
    logging.getLogger("uvicorn.error").addFilter(lambda record: "graceful shutdown exceeded" not in record.getMessage())
    sock = listen_socket(host, port)  # before loading anything: a taken port should cost no time
    try:
        if not is_loopback(host):
            print(f"warning: --host {host} makes the run's model and data reachable from other machines",
                  file=sys.stderr, flush=True)
        explorer = load_explorer(run_ref, data, vocoder, options, tracking_uri, trust_plugins)
        app = create_app(explorer, loopback_only=is_loopback(host))
        conditioned = f", conditioned on {explorer.run.condition['name']}" if explorer.run.condition else ""
        echo(f"exploring run {explorer.run.run_id}: {len(explorer.indices)} of {explorer.test_clips} test clips, "
             f"latent_dim {explorer.latent_dim}, vocoder {explorer.vocoder}, labels: {explorer.label_kind}{conditioned}")
        echo(f"open {page_url(host, port)}  (Ctrl-C stops)")
        # No graceful wait for open connections (a browser keeps one alive): a stop is at once.
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=0.5,
                                access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
