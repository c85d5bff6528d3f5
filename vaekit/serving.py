"""The generator every run logs: an MLflow pyfunc model that turns latent vectors into WAV files.

``mlflow.pyfunc.load_model(URI).predict({"z": Z})`` and ``mlflow models serve -m URI`` (``POST
/invocations`` with ``{"inputs": {"z": Z}}``) take ``Z``, rows of ``latent_dim`` finite numbers, and
answer one base64-encoded WAV file (16-bit PCM, mono, at the run's sample rate) per row: the run's
decoder → denormalisation (the run's ``min_values``/``max_values``) → the run's vocoder with the
options it was run with.  A wrong ``Z`` (not rows of ``latent_dim`` numbers, NaN or infinite values,
more than :data:`MAX_ROWS` rows) raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which
the scoring server answers with HTTP 400.

A conditional run's generator (``vaekit run --condition NAME``) takes ``{"z": Z, "label": L}``, ``L``
one class name of the run's label per row of ``Z`` (``condition.json`` lists them); an unknown class is
a 400 whose message lists the classes.

The model is logged "from code" (:data:`CODE`, a file that imports :class:`Generator`): loading it
unpickles nothing.  Its artifacts (see :func:`save_artifacts`): ``decoder.keras`` (loaded with Keras
``safe_mode``), ``audio.json``, ``min_values.npy``, ``max_values.npy`` and ``vocoder.json`` (the
vocoder's *name* and options: the serving process finds that component as vaekit does, among the
built-ins, installed plugin packages and the files named in ``VAEKIT_PLUGINS``; a run made with a
``--plugin`` file needs that file named there, see docs/serving.md).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

#: Rows one request may hold: each answer is a whole WAV file (~60 kB of base64 a second of audio).
MAX_ROWS = 256
#: The decoder is run on at most this many rows at a time.
BATCH = 64
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


def wav_base64(wave: np.ndarray, sr: int) -> str:
    """One waveform as a base64-encoded 16-bit PCM WAV file."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Generator(mlflow.pyfunc.PythonModel):
    """z → decoder → denormalisation → vocoder → base64 WAV, one per row of z (see the module's docstring)."""

    # predict has no type hints: MLflow would check the input against them before latents() can give its
    # own one-line reasons.  This flag (MLflow's own, set on its ChatModel) says so, and spares the warning
    # MLflow prints for a predict without hints; a version of MLflow without it prints that warning only.
    _skip_type_hint_validation = True

    def load_context(self, context):
        import keras

        import vaekit.model  # noqa: F401  (registers vaekit's Keras classes before the decoder is read)
        from vaekit.audio import AudioParams
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
        for start in range(0, len(z), BATCH):
            inputs = z[start:start + BATCH]
            if label is not None:
                inputs = [inputs, one_hot(label[start:start + BATCH], len(self.condition["classes"]))]
            # A direct call, not predict(): predict traces a new function for every batch size a request brings.
            x = np.asarray(keras.ops.convert_to_numpy(self.decoder(inputs, training=False)),
                           dtype=np.float32)[..., 0]
            waves = vocode(self.vocoder, self.vocoder_fn, denormalize(x, self.min_values, self.max_values))
            out.extend(wav_base64(w, self.audio.sr) for w in waves)
        return out
