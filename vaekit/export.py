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

Both go through Keras' ``Model.export`` (ONNX via tf2onnx on the TensorFlow backend).  Everything
is written into a staging folder beside ``OUT`` and renamed into place at the end: a failure leaves
no ``OUT`` (and, with ``force``, the old ``OUT`` untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vaekit.errors import ConfigError, DataError

FORMATS = ("onnx", "saved_model")

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
           trust_plugins: bool = False) -> list[Path]:
    """Write the run's decoder, encoder and what turns their output into sound into ``out``; return the files.

    ``run_or_uri`` is a run id or a ``models:/`` URI (:mod:`vaekit.registry`).  ``out`` existing is a
    :class:`ConfigError` unless ``force`` (then it is replaced, once the new export is complete).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_symlink():
        raise DataError(f"{out}: is a symbolic link; not writing through it: remove the link or choose another OUT")
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (--force replaces it)")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not an export folder; remove it or choose another OUT")
    if fmt == "onnx":
        _check_onnx_exporter()

    from vaekit.generate import open_run

    run = open_run(run_or_uri, tracking_uri, trust_plugins)  # before anything is written: a typo costs nothing
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; OUT is an ordinary folder
    try:
        _write(run, staging, fmt)
        files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / f for f in files]


def _check_onnx_exporter() -> None:
    """ONNX export needs tf2onnx and onnx (``pip install 'vaekit[export]'``): say so before loading anything."""
    import importlib.util

    missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)}: pip install 'vaekit[export]' "
                          "(or --format saved_model)")


def _write(run, directory: Path, fmt: str) -> None:
    import keras

    encoder, decoder = _named(run.model)
    if fmt == "onnx":
        with warnings.catch_warnings():  # Keras patches np.object back in for tf2onnx; NumPy warns about it
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            decoder.export(str(directory / "decoder.onnx"), format="onnx", verbose=False)
            encoder.export(str(directory / "encoder.onnx"), format="onnx", verbose=False)
    else:
        if keras.backend.backend() == "torch":
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


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out``; an existing ``out`` is removed only after."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "out")
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old / "out", out)
        raise
    shutil.rmtree(old, ignore_errors=True)
