"""``vaekit export``: a run's decoder and encoder as ONNX files or TensorFlow SavedModels, for use outside vaekit.

``OUT`` gets (see :data:`README`, written beside them as ``README.txt``):

- ``decoder.onnx`` / ``decoder/``: input ``z`` (batch, latent_dim) → mel spectrogram in [0, 1]
  (batch, n_mels, frames, 1);
- ``encoder.onnx`` / ``encoder/``: input ``mel`` (batch, n_mels, frames, 1) in [0, 1] → ``z_mean``,
  ``z_log_var`` (batch, latent_dim) each, in that order;
- ``audio.json`` (the STFT/mel parameters), ``min_values.npy`` / ``max_values.npy`` (dB = x ·
  (max − min) + min) and ``vocoder.json`` (the vocoder the run used, for reference);
- a conditional run (``vaekit run --condition NAME``): both take a second input ``label``, the class
  one-hot (batch, K) in the order ``condition.json`` lists the classes, written beside them.
- ``vaekit-export.json`` (:data:`MARKER`): which run and format; ``--force`` replaces only a folder holding it.

Both go through Keras' ``Model.export`` (ONNX via tf2onnx on the TensorFlow backend).  Everything
is written into a staging folder beside ``OUT`` and renamed into place at the end: a failure leaves
no ``OUT`` (and, with ``force``, the old ``OUT`` untouched).

``force`` replaces an earlier export only: a folder holding :data:`MARKER`.  Never a folder without it
(a user's files), nor one that is or holds the working directory, the tracking store or the run's
artifacts, whatever it holds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from vaekit.errors import ConfigError, DataError
from vaekit.staging import staged_folder

FORMATS = ("onnx", "saved_model")
#: The file every export holds: what ``--force`` recognises an earlier export by.
MARKER = "vaekit-export.json"

README = """\
Exported from vaekit run {run_id} ({fmt}).

decoder{suffix}: z (batch, {latent_dim}) float32{label_in}  ->  mel (batch, {n_mels}, {frames}, 1) float32 in [0, 1]
encoder{suffix}: mel (batch, {n_mels}, {frames}, 1) float32 in [0, 1]{label_in}  ->  z_mean, z_log_var (batch, {latent_dim}) each
{label_text}
From the decoder's output to sound:
1. dB = mel[..., 0] * (max_values - min_values) + min_values
   (min_values.npy, max_values.npy: scalars or arrays that broadcast to ({n_mels}, {frames})).
2. power = 10 ** (dB / 10): a mel power spectrogram with the parameters in audio.json
   (sr={sr} Hz, n_fft={n_fft}, hop_length={hop_length}, n_mels={n_mels}, fmin={fmin}, fmax={fmax}, {samples} samples).
3. Invert it with any mel vocoder, e.g. Griffin-Lim with librosa:
   y = librosa.feature.inverse.mel_to_audio(power, sr={sr}, n_fft={n_fft}, hop_length={hop_length}, fmin={fmin}, fmax={fmax})
   The run itself used vocoder {vocoder!r} (vocoder.json).
To encode a sound: the reverse (librosa.feature.melspectrogram with audio.json's parameters,
power_to_db, then (dB - min_values) / (max_values - min_values), clipped to [0, 1]).

{usage}
"""

USAGE = {
    "onnx": """Running the decoder with onnxruntime:
    import numpy as np, onnxruntime as ort
    session = ort.InferenceSession("decoder.onnx")
    mel = session.run(None, {{"z": np.random.default_rng(0).standard_normal((4, {latent_dim}), dtype=np.float32){label_feed}}})[0]""",
    "saved_model": """Running the decoder with TensorFlow:
    import numpy as np, tensorflow as tf
    decoder = tf.saved_model.load("decoder")
    mel = decoder.serve({serve_args}).numpy()""",
}
#: What the README adds for a conditional run's models.
LABEL_TEXT = """
label: the class one-hot (batch, {classes}) float32 of the run's condition {name!r}, in the order of
condition.json's "classes": {listed}.  A row may mix classes (a walk between two labels).
"""


def export(run_or_uri: str, out, fmt: str = "onnx", tracking_uri: str | None = None, force: bool = False,
           trust_plugins: bool = False, backend: str | None = None) -> list[Path]:
    """Write the run's decoder, encoder and what turns their output into sound into ``out``; return the files.

    ``run_or_uri`` is a run id or a ``models:/`` URI (:mod:`vaekit.registry`).  ``out`` existing is a
    :class:`ConfigError` unless ``force`` (then it is replaced, once the new export is complete).
    ``backend``: the one to export with, resolved and selected by :func:`vaekit.backend.select`.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    from vaekit import tracking

    out = Path(out)
    _check_out(out, force, store=tracking.sqlite_path(tracking.resolve_tracking_uri(tracking_uri)))
    if fmt == "onnx":
        _check_onnx_exporter()

    import mlflow

    from vaekit.backend import select
    from vaekit.logged import open_run

    backend = select(backend)  # before Keras is imported by loading the run

    run = open_run(run_or_uri, tracking_uri, trust_plugins)  # before anything is written: a typo costs nothing
    artifacts = mlflow.MlflowClient(run.tracking_uri).get_run(run.run_id).info.artifact_uri
    _never_replace(out, _local_path(artifacts), f"run {run.run_id}'s artifacts")
    out.parent.mkdir(parents=True, exist_ok=True)
    # An existing OUT was checked above: replaced only with force, and only if an earlier export wrote it.
    with staged_folder(out, replace=force) as staging:
        _write(run, staging, fmt, backend)
        files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    return [out / f for f in files]


def _check_out(out: Path, force: bool, store: Path | None) -> None:
    """Refuse an ``out`` that cannot be written or must not be replaced, before anything is loaded (one line each).

    ``store``: the sqlite tracking store's database file, if it is one.
    """
    from vaekit.tracking import _first_non_dir

    if out.is_symlink():
        raise DataError(f"{out}: is a symbolic link; not writing through it: remove the link or choose another OUT")
    blocker = _first_non_dir(out.absolute().parent)
    if blocker.exists() and not blocker.is_dir():
        raise DataError(f"{out}: {blocker} is a file, not a directory; choose another OUT")
    _never_replace(out, Path.cwd(), "the working directory")
    _never_replace(out, store, "the tracking store")
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: is a file, not an export folder; remove it or choose another OUT")
    if not force:
        raise ConfigError(f"{out}: already exists (--force replaces it, if an earlier vaekit export wrote it)")
    if not is_export(out):
        raise ConfigError(f"{out}: not a folder vaekit export wrote (it has no {MARKER}); --force replaces only an "
                          "earlier export: remove it yourself or choose another OUT")


def _never_replace(out: Path, protected: Path | None, what: str) -> None:
    """:class:`ConfigError` if ``out`` is ``protected`` or a folder above it (``--force`` or not)."""
    if protected is None:
        return
    target, kept = out.resolve(), protected.resolve()
    if target == kept or target in kept.parents:
        where = "is" if target == kept else "holds"
        raise ConfigError(f"{out}: {where} {what} ({kept}); an export never replaces it: choose another OUT")


def _local_path(uri: str) -> Path | None:
    """The folder of a local (``file:`` or plain path) artifact URI, else None."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(uri) if parsed.scheme == "" else None


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds the :data:`MARKER` an export writes (a JSON object naming vaekit's export)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("vaekit_export") == 1


def _check_onnx_exporter() -> None:
    """ONNX export needs tf2onnx and onnx (``pip install 'vaekit[export]'``): say so before loading anything."""
    import importlib.util

    missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)}: pip install 'vaekit[export]' "
                          "(or --format saved_model)")


def _write(run, directory: Path, fmt: str, backend: str) -> None:
    encoder, decoder = _named(run.model)
    if fmt == "onnx":
        with warnings.catch_warnings():  # Keras patches np.object back in for tf2onnx; NumPy warns about it
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            decoder.export(str(directory / "decoder.onnx"), format="onnx", verbose=False)
            encoder.export(str(directory / "encoder.onnx"), format="onnx", verbose=False)
    else:
        if backend == "torch":
            raise ConfigError("--format saved_model needs the tensorflow or jax backend (--backend tensorflow)")
        decoder.export(str(directory / "decoder"), format="tf_saved_model", verbose=False)
        encoder.export(str(directory / "encoder"), format="tf_saved_model", verbose=False)
    (directory / "audio.json").write_text(json.dumps(run.audio.to_dict(), indent=2))
    np.save(directory / "min_values.npy", run.min_values)
    np.save(directory / "max_values.npy", run.max_values)
    (directory / "vocoder.json").write_text(json.dumps(
        {"name": run.config.vocoder, "options": run.config.option("vocoder")}, indent=2, default=str))
    n_mels, frames = run.input_shape
    a = run.audio
    z_text = f'np.random.default_rng(0).standard_normal((4, {run.latent_dim})).astype("float32")'
    label_in, label_text, label_feed, serve_args = "", "", "", z_text
    if run.condition:
        (directory / "condition.json").write_text(json.dumps(run.condition, indent=2))
        k = len(run.classes)
        label_in = f", label (batch, {k}) float32"
        label_text = LABEL_TEXT.format(classes=k, name=run.condition["name"], listed=", ".join(run.classes))
        label_feed = f', "label": np.eye({k}, dtype=np.float32)[[0, 0, 1, 1]]'
        serve_args = f"[{z_text}, np.eye({k}, dtype=np.float32)[[0, 0, 1, 1]]]"
    usage = USAGE[fmt].format(latent_dim=run.latent_dim, label_feed=label_feed, serve_args=serve_args)
    text = README.format(run_id=run.run_id, fmt=fmt, suffix=".onnx" if fmt == "onnx" else "/", latent_dim=run.latent_dim,
                         n_mels=n_mels, frames=frames, sr=a.sr, n_fft=a.n_fft, hop_length=a.hop_length, samples=a.samples,
                         fmin=a.fmin, fmax=a.fmax, label_in=label_in, label_text=label_text,
                         vocoder=run.config.vocoder, usage=usage)
    (directory / "README.txt").write_text(text)
    from vaekit import __version__

    (directory / MARKER).write_text(json.dumps({"vaekit_export": 1, "run_id": run.run_id, "format": fmt,
                                                "vaekit_version": __version__}, indent=2))


def _named(vae):
    """The VAE's encoder and decoder with inputs named ``mel`` and ``z`` (and ``label``, a conditional VAE's
    one-hot), each called once (Keras exports only called models)."""
    import keras

    mel = keras.Input(tuple(vae.encoder.inputs[0].shape[1:]), name="mel")
    z = keras.Input((vae.latent_dim,), name="z")
    if vae.classes:
        label = keras.Input((vae.classes,), name="label")
        encoder = keras.Model([mel, label], list(vae.encoder([mel, label])), name="encoder")
        decoder = keras.Model([z, label], vae.decoder([z, label]), name="decoder")
        one = np.zeros((1, vae.classes), dtype=np.float32)
        encoder([np.zeros((1, *mel.shape[1:]), dtype=np.float32), one])
        decoder([np.zeros((1, vae.latent_dim), dtype=np.float32), one])
        return encoder, decoder
    z_mean, z_log_var = vae.encoder(mel)
    encoder = keras.Model(mel, [z_mean, z_log_var], name="encoder")
    decoder = keras.Model(z, vae.decoder(z), name="decoder")
    encoder(np.zeros((1, *mel.shape[1:]), dtype=np.float32))
    decoder(np.zeros((1, vae.latent_dim), dtype=np.float32))
    return encoder, decoder
