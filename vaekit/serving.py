"""The two models every run logs, as MLflow serves them: the generator (latent vectors → WAV files) and the VAE
(spectrograms → reconstructions, :func:`_load_pyfunc`).

``mlflow.pyfunc.load_model(URI).predict({"z": Z})`` and ``mlflow models serve -m URI`` (``POST
/invocations`` with ``{"inputs": {"z": Z}}``) take ``Z``, rows of ``latent_dim`` finite numbers, and
answer one base64-encoded WAV file (16-bit PCM, mono, at the run's sample rate) per row: the run's
decoder → its output clipped to the training range [0, 1] → denormalisation (the run's
``min_values``/``max_values``) → the run's vocoder with the options it was run with.  A wrong ``Z`` (not
rows of ``latent_dim`` numbers, NaN or infinite values, values beyond ±:data:`Z_LIMIT`, more than
:data:`MAX_ROWS` rows) raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which the scoring
server answers with HTTP 400.

Served (``mlflow models serve`` sets ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``), a request is stopped
once it has taken :data:`BUDGET_SHARE` of that timeout, and answered 400 saying so: the server would
answer 504 at the timeout but leave the worker vocoding on (a z that decodes to a noise-like spectrogram
costs Griffin-Lim's NNLS minutes of CPU a clip).  The stop is an exception raised in the request's thread
at its next Python step (:func:`deadline`): librosa's NNLS and Griffin-Lim take one every iteration.

A conditional run's generator (``vaekit run --condition NAME``) takes ``{"z": Z, "label": L}``, ``L``
one class name of the run's label per row of ``Z`` (``condition.json`` lists them); an unknown class is
a 400 whose message lists the classes.

The model is logged "from code" (:data:`CODE`, a file that imports :class:`Generator`): loading it
unpickles nothing.  Its artifacts (see :func:`save_artifacts`): ``decoder.keras`` (loaded with Keras
``safe_mode``), ``audio.json``, ``min_values.npy``, ``max_values.npy`` and ``vocoder.json`` (the
vocoder's *name* and options: the serving process finds that component as vaekit does, among the
built-ins, installed plugin packages and the files named in ``VAEKIT_PLUGINS``; a run made with a
``--plugin`` file needs that file named there, see docs/serving.md).

The VAE is logged with MLflow's Keras flavour (``mlflow.keras.load_model`` gives the Keras model), and its
pyfunc flavour names this module as its loader (:func:`_load_pyfunc`): ``mlflow.pyfunc.load_model(URI).predict(X)``
and ``mlflow models serve`` take ``X``, spectrograms in [0, 1] shaped (n, n_mels, frames, 1) (or
``{"mel": X}``, the signature's name), and answer their reconstructions from z = μ, the same shape.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from vaekit.audio import AudioParams, wav_bytes

#: Rows one request may hold: each answer is a whole WAV file (~60 kB of base64 a second of audio).
MAX_ROWS = 256
#: The decoder is run on at most this many rows at a time.
BATCH = 64
#: Largest |z| value a request may hold (the prior is N(0, I); this only keeps the decoder's numbers finite).
Z_LIMIT = 1000.0
#: Share of the server's request timeout after which a request is stopped (and answered 400 before the 504).
BUDGET_SHARE = 0.9
#: Seconds between two stops of a request that ran on past its deadline (see :func:`deadline`).
REFIRE = 0.5
#: The scoring server's request timeout, in seconds (``mlflow models serve --timeout`` sets it).
TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"
ARTIFACTS = ("decoder", "audio", "min_values", "max_values", "vocoder")


def save_artifacts(decoder, audio, min_values, max_values, vocoder: str, vocoder_options: dict, directory: Path,
                   condition: dict | None = None) -> dict:
    """Write the generator's artifacts into ``directory``; return ``{name: path}`` for ``log_model``.

    ``condition`` (a conditional run's ``{"name", "classes"}``) adds ``condition.json``.
    """
    directory = Path(directory)
    paths = {name: directory / file for name, file in zip(
        ARTIFACTS, ("decoder.keras", "audio.json", "min_values.npy", "max_values.npy", "vocoder.json"))}
    decoder.save(paths["decoder"])
    paths["audio"].write_text(json.dumps(audio.to_dict(), indent=2))
    np.save(paths["min_values"], np.asarray(min_values, dtype=np.float32))
    np.save(paths["max_values"], np.asarray(max_values, dtype=np.float32))
    paths["vocoder"].write_text(json.dumps({"name": vocoder, "options": vocoder_options}, indent=2, default=str))
    if condition:
        paths["condition"] = directory / "condition.json"
        paths["condition"].write_text(json.dumps(condition, indent=2))
    return {name: str(path) for name, path in paths.items()}


def metadata(latent_dim: int, audio, condition: dict | None = None) -> dict:
    """What the generator takes and gives, in its ``MLmodel`` (no MLflow signature: see :func:`latents`)."""
    out = {"vaekit_input": f"z: rows of {latent_dim} finite numbers (at most {MAX_ROWS} rows)",
           "vaekit_output": f"one base64 WAV (16-bit PCM, mono, {audio.sr} Hz, {audio.samples} samples) per row",
           "latent_dim": latent_dim, "sample_rate": audio.sr}
    if condition:
        out["vaekit_input"] += f"; label: one class of {condition['name']} per row, one of {', '.join(condition['classes'])}"
        out["condition"] = condition
    return out


#: The generator's code file (MLflow's "models from code"): loading the model imports vaekit.serving and
#: unpickles nothing.
CODE = """import mlflow.models

from vaekit.serving import Generator

mlflow.models.set_model(Generator())
"""


def spectrograms(model_input, shape: tuple[int, int]) -> np.ndarray:
    """``model_input`` (``{"mel": X}``, or ``X``: (n, n_mels, frames, 1) or (n, n_mels, frames)) → float32 (n, n_mels,
    frames, 1); :func:`invalid` with one line naming what is wrong."""
    if isinstance(model_input, dict):
        if set(model_input) != {"mel"}:
            raise invalid(f"inputs: expected one field 'mel' (spectrograms {shape[0]}×{shape[1]}), got {sorted(model_input)}")
        model_input = model_input["mel"]
    try:
        x = np.asarray(model_input, dtype=np.float32)
    except (TypeError, ValueError):
        raise invalid(f"mel: expected spectrograms of shape (n, {shape[0]}, {shape[1]}, 1), got something else") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (*shape, 1):
        raise invalid(f"mel: expected spectrograms of shape (n, {shape[0]}, {shape[1]}, 1), got shape {x.shape}")
    if not 0 < len(x) <= MAX_ROWS:
        raise invalid(f"mel: {len(x)} spectrograms, expected 1 to {MAX_ROWS} a request")
    if not np.isfinite(x).all():
        raise invalid("mel: holds NaN or infinite values")
    return x


class Reconstructor:
    """The VAE as ``mlflow.pyfunc`` gives it: spectrograms → their reconstructions from z = μ (what vaekit calls a
    reconstruction: deterministic, as ``vaekit reconstruct`` and the test metrics make them).

    A conditional VAE takes ``{"mel": X, "label": L}``, L each spectrogram's class one-hot (n, K), as its
    signature says (the classes' order is the run's ``data/condition.json``)."""

    def __init__(self, vae):
        self.vae = vae
        self.shape = tuple(int(s) for s in vae.encoder.inputs[0].shape[1:3])
        self.classes = int(getattr(vae, "classes", 0) or 0)

    def predict(self, model_input, params=None):
        label = None
        if self.classes:
            if not isinstance(model_input, dict) or set(model_input) != {"mel", "label"}:
                shown = sorted(model_input) if isinstance(model_input, dict) else type(model_input).__name__
                raise invalid(f"inputs: this VAE is conditional: expected the fields 'mel' and 'label' (one-hot rows "
                              f"of {self.classes} classes), got {shown}")
            label = one_hots(model_input["label"], self.classes)
            model_input = {"mel": model_input["mel"]}
        x = spectrograms(model_input, self.shape)
        if label is not None and len(label) != len(x):
            raise invalid(f"label: {len(label)} rows for {len(x)} spectrograms; give one per spectrogram")
        out = []
        for start in range(0, len(x), BATCH):
            rows = slice(start, start + BATCH)
            extra = [] if label is None else [label[rows]]
            z_mean, _ = self.vae.encoder([x[rows], *extra] if extra else x[rows], training=False)
            out.append(np.asarray(self.vae.decoder([z_mean, *extra] if extra else z_mean, training=False),
                                  dtype=np.float32))
        return np.concatenate(out)


def one_hots(values, classes: int) -> np.ndarray:
    """A request's ``label`` for a conditional VAE → float32 (n, classes) rows that are one-hot; :func:`invalid` else."""
    try:
        rows = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        rows = None
    if rows is None or rows.ndim != 2 or rows.shape[1] != classes or not np.isin(rows, (0.0, 1.0)).all() \
            or not (rows.sum(axis=1) == 1).all():
        raise invalid(f"label: expected one-hot rows of {classes} classes, one per spectrogram")
    return rows


def _load_pyfunc(path):
    """MLflow's pyfunc loader for a run's VAE (its ``MLmodel`` names this module): the Keras flavour's model, with
    vaekit's Keras classes registered first (a serving process imports nothing else of vaekit), as a
    :class:`Reconstructor`.  ``path``: the model's folder."""
    import mlflow.keras

    import vaekit.model  # noqa: F401  (registers the custom Keras classes)

    return Reconstructor(mlflow.keras.load_model(path))


def write_code(directory: Path) -> str:
    """Write :data:`CODE` as ``generator.py`` in ``directory``; return its path (``log_model``'s ``python_model``)."""
    path = Path(directory) / "generator.py"
    path.write_text(CODE)
    return str(path)


def invalid(message: str):
    """The exception a bad request raises: the scoring server answers 400 with ``message`` in its JSON."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def latents(model_input, latent_dim: int) -> np.ndarray:
    """``model_input`` (``{"z": rows}``, an array of rows, or a one-column-per-dimension DataFrame) → float32 (n, latent_dim).

    Raises :func:`invalid` with one line naming what is wrong.
    """
    if isinstance(model_input, dict):
        if set(model_input) != {"z"}:
            raise invalid(f"inputs: expected one field 'z' (rows of {latent_dim} numbers), got {sorted(model_input)}")
        model_input = model_input["z"]
    elif hasattr(model_input, "to_numpy"):  # a DataFrame (dataframe_split / dataframe_records requests)
        model_input = model_input.to_numpy()
    try:
        z = np.asarray(model_input, dtype=np.float64)
    except (TypeError, ValueError):
        raise invalid(f"z: expected rows of {latent_dim} numbers (a list of lists), got something else") from None
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise invalid(f"z: expected rows of {latent_dim} numbers (shape (n, {latent_dim})), got shape {z.shape}")
    if len(z) == 0:
        raise invalid("z: no rows")
    if len(z) > MAX_ROWS:
        raise invalid(f"z: {len(z)} rows, at most {MAX_ROWS} a request")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise invalid(f"z: row {int(np.argmax(bad))} holds NaN or infinite values")
    far = np.abs(z).max(axis=1) > Z_LIMIT
    if far.any():
        row = int(np.argmax(far))
        raise invalid(f"z: row {row} holds {z[row][np.argmax(np.abs(z[row]))]:g}, beyond ±{Z_LIMIT:g} (the prior is "
                      "N(0, I))")
    return z.astype(np.float32)


def request_inputs(model_input, latent_dim: int, condition: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A request's ``z`` (see :func:`latents`) and, for a conditional generator (``condition``: its
    ``{"name", "classes"}``), each row's class index (see :func:`labels`); None for an unconditional one."""
    fields = sorted(model_input) if isinstance(model_input, dict) else None
    if not condition:
        if fields is not None and "label" in fields:
            raise invalid("label: this generator is unconditional (its run had no --condition); send only 'z'")
        return latents(model_input, latent_dim), None
    if fields != ["label", "z"]:
        shown = fields if fields is not None else type(model_input).__name__
        raise invalid(f"inputs: expected the fields 'z' (rows of {latent_dim} numbers) and 'label' (one class of "
                      f"{condition['name']} per row), got {shown}")
    z = latents({"z": model_input["z"]}, latent_dim)
    return z, labels(model_input["label"], condition, len(z))


def labels(values, condition: dict, rows: int) -> np.ndarray:
    """A request's ``label`` (one class name per row of z) → class indices; :func:`invalid` naming what is wrong,
    an unknown class listing the classes (:func:`vaekit.data.class_indices`)."""
    from vaekit.data import class_indices
    from vaekit.errors import DataError

    if isinstance(values, np.ndarray):  # the scoring server hands each field over as an array
        values = values.tolist()
    if isinstance(values, str) or not isinstance(values, list):
        raise invalid(f"label: expected a list of class names of {condition['name']}, one per row of z, "
                      f"got {type(values).__name__}")
    if len(values) != rows:
        raise invalid(f"label: {len(values)} class names for {rows} rows of z; give one per row")
    try:
        return class_indices(values, condition["classes"], condition["name"], "label")
    except DataError as exc:
        raise invalid(str(exc)) from None
class TooSlow(BaseException):
    """Raised in a thread by :func:`deadline` when its time is up (a BaseException, like KeyboardInterrupt: a
    plugin's or library's ``except Exception`` must not swallow it)."""


def request_budget() -> float | None:
    """Seconds a request may take: :data:`BUDGET_SHARE` of the server's timeout (:data:`TIMEOUT_ENV`); None when
    not served (``predict`` called in a process of the user's, who can interrupt it)."""
    import os

    try:
        timeout = float(os.environ[TIMEOUT_ENV])
    except (KeyError, ValueError):
        return None
    return BUDGET_SHARE * timeout if timeout > 0 else None


@contextlib.contextmanager
def deadline(seconds: float | None):
    """Raise :class:`TooSlow` in this thread, at its next Python step, once ``seconds`` have passed in the block.

    A watcher thread sets the exception asynchronously (``PyThreadState_SetAsyncExc``), and again every
    :data:`REFIRE` seconds while the block runs on (an exception raised inside a finaliser is only printed,
    not propagated); one set as the block ends is withdrawn, so it never reaches code after the block.
    ``None``: no deadline.
    """
    if seconds is None:
        yield
        return
    import ctypes
    import threading

    thread, lock, done = ctypes.c_ulong(threading.get_ident()), threading.Lock(), threading.Event()
    fired = []

    def watch():
        wait = seconds
        while not done.wait(wait):
            with lock:
                if done.is_set():
                    return
                fired.append(True)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, ctypes.py_object(TooSlow))
            wait = REFIRE

    watcher = threading.Thread(target=watch, name="vaekit-deadline", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        while True:  # a re-fired exception may land here too: until the watcher is told, take it and go on
            try:
                with lock:
                    done.set()
                    if fired:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, None)  # not yet raised: withdrawn
                break
            except TooSlow:
                continue


def wav_base64(wave: np.ndarray, sr: int) -> str:
    """One waveform as a base64-encoded 16-bit PCM WAV file (:func:`vaekit.audio.wav_bytes`)."""
    return base64.b64encode(wav_bytes(wave, sr)).decode("ascii")


class Generator(mlflow.pyfunc.PythonModel):
    """z → decoder → denormalisation → vocoder → base64 WAV, one per row of z (see the module's docstring)."""

    # predict has no type hints: MLflow would check the input against them before latents() can give its
    # own one-line reasons.  This flag (MLflow's own, set on its ChatModel) says so, and spares the warning
    # MLflow prints for a predict without hints; a version of MLflow without it prints that warning only.
    _skip_type_hint_validation = True

    def load_context(self, context):
        import keras

        import vaekit.model  # noqa: F401  (registers vaekit's Keras classes before the decoder is read)
        from vaekit.components import get_component

        art = context.artifacts
        self.decoder = keras.saving.load_model(art["decoder"], safe_mode=True, compile=False)
        self.latent_dim = int(self.decoder.inputs[0].shape[-1])
        self.audio = AudioParams.from_dict(json.loads(Path(art["audio"]).read_text()), source="generator audio.json")
        self.min_values = np.load(art["min_values"], allow_pickle=False)
        self.max_values = np.load(art["max_values"], allow_pickle=False)
        spec = json.loads(Path(art["vocoder"]).read_text())
        self.vocoder = get_component("vocoder", spec["name"])
        self.vocoder_fn = self.vocoder.create(self.audio, **spec["options"])
        self.condition = json.loads(Path(art["condition"]).read_text()) if art.get("condition") else None

    def predict(self, context, model_input, params=None):
        import keras

        from vaekit.components import vocode
        from vaekit.data import denormalize
        from vaekit.model import one_hot

        z, label = request_inputs(model_input, self.latent_dim, self.condition)
        out = []
        budget = request_budget()
        try:
            with deadline(budget):
                for start in range(0, len(z), BATCH):
                    inputs = z[start:start + BATCH]
                    if label is not None:
                        inputs = [inputs, one_hot(label[start:start + BATCH], len(self.condition["classes"]))]
                    # A direct call, not predict(): predict traces a new function for every batch size a request brings.
                    x = np.asarray(keras.ops.convert_to_numpy(self.decoder(inputs, training=False)),
                                   dtype=np.float32)[..., 0]
                    # The training range: beyond it dB values overflow the vocoder (a relu decoder far from the prior).
                    x = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)
                    waves = vocode(self.vocoder, self.vocoder_fn, denormalize(x, self.min_values, self.max_values))
                    out.extend(wav_base64(w, self.audio.sr) for w in waves)
        except TooSlow:
            raise invalid(f"z: stopped after {budget:g} s, at rows {start}-{min(start + BATCH, len(z)) - 1} of {len(z)} "
                          f"(the server's request timeout is {budget / BUDGET_SHARE:g} s): the vocoder takes long on what "
                          "they decode to; send fewer rows, or z nearer the prior N(0, I)") from None
        return out
