"""A logged run, loaded back: its model, audio parameters, settings, denormalisation arrays, vocoders and dataset.

The library part that every command working on a finished run shares (``vaekit generate``,
``interpolate``, ``reconstruct``, ``explore``, ``export``, ``register``): a run is named by its id or
a ``models:/`` URI (see :mod:`vaekit.registry`) and everything comes from the run itself: the model
(its logged model's ``models:/`` URI, ``mlflow.keras.load_model`` with Keras ``safe_mode``),
``audio.json`` (how mel spectrograms become sound), ``config.toml`` (latent size, vocoder and its
options, where the data was), ``data/min_values.npy`` / ``data/max_values.npy`` (decoder output
[0, 1] → dB) and, for a conditional run, ``data/condition.json`` (its label and classes).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams
from vaekit.config import RunConfig, load_toml, merge, parse_options
from vaekit.data import class_indices, denormalize, normalize
from vaekit.errors import ConfigError, DataError, PluginError, VaekitError, one_line


@dataclass
class LoggedRun:
    """A run's model and everything needed to turn its decoder's output into sound."""

    run_id: str
    tracking_uri: str
    model: object
    audio: AudioParams
    min_values: np.ndarray
    max_values: np.ndarray
    config: RunConfig
    #: Which of the run's recorded plugin files were not loaded, for "unknown component" errors.
    plugin_hint: str = ""
    #: A conditional run's ``{"name", "classes"}`` (``data/condition.json``); None for an unconditional run.
    condition: dict | None = None

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    @contextlib.contextmanager
    def hinting_plugins(self):
        """A :class:`PluginError` raised inside (a component the run used is unknown here) goes on with
        :attr:`plugin_hint` appended: which of the run's plugin files were not loaded, and how to load them."""
        try:
            yield
        except PluginError as exc:
            raise PluginError(f"{exc}{self.plugin_hint}") from None

    @property
    def classes(self) -> list[str]:
        """A conditional run's classes, in class-index order (``[]`` when unconditional)."""
        return list(self.condition["classes"]) if self.condition else []

    def label_indices(self, names, flag: str = "--label") -> np.ndarray:
        """Class names → indices; one-line errors for an unconditional run or an unknown class (listing the classes)."""
        if not self.condition:
            raise ConfigError(f"{flag}: run {self.run_id} is unconditional (trained without --condition): "
                              "it generates from z alone")
        return class_indices(list(names), self.classes, self.condition["name"], flag)

    def one_hot(self, indices) -> np.ndarray:
        from vaekit.model import one_hot

        return one_hot(indices, len(self.classes))

    @property
    def input_shape(self) -> tuple[int, int]:
        """(n_mels, frames) the model takes."""
        return tuple(int(s) for s in self.model.encoder.inputs[0].shape[1:3])

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return denormalize(x, self.min_values, self.max_values)

    def normalize(self, db: np.ndarray) -> np.ndarray:
        return normalize(db, self.min_values, self.max_values)

    def color_scale(self) -> tuple[float, float]:
        from vaekit.figures import color_scale

        return color_scale(self.min_values, self.max_values)


def open_run(run_id: str, tracking_uri: str | None = None, trust_plugins: bool = False) -> LoggedRun:
    """Load a run's model, audio parameters, settings and denormalisation arrays.

    ``run_id`` is a run reference (:mod:`vaekit.registry`): a run id, ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS`` or ``models:/MODEL_ID``, standing for the run that logged that model.
    Raises :class:`VaekitError` with one line for an unknown run or model, a run without a model
    (one that failed or was stopped before the end) or one logged before these artifacts existed.
    The plugin files the run recorded are imported only with ``trust_plugins`` (after their paths
    are printed); otherwise a component they provided is an error naming them.
    """
    # Downloading four small artifacts needs no progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from vaekit.plugins import load_run_plugin_files, plugin_hint

    client, run = find_run(run_id, tracking_uri)
    uri, run_id = client.tracking_uri, run.info.run_id
    if trust_plugins:
        load_run_plugin_files(run.data.tags)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            audio_file = Path(client.download_artifacts(run_id, "audio.json", tmp))
            config_file = Path(client.download_artifacts(run_id, "config.toml", tmp))
            data_dir = Path(client.download_artifacts(run_id, "data", tmp))
            min_values = np.load(data_dir / "min_values.npy", allow_pickle=False)
            max_values = np.load(data_dir / "max_values.npy", allow_pickle=False)
            condition_file = data_dir / "condition.json"
            condition = json.loads(condition_file.read_text()) if condition_file.is_file() else None
        except (MlflowException, OSError) as exc:
            if run.info.status != "FINISHED":
                raise VaekitError(f"run {run_id} has no logged model (status {run.info.status}: "
                                  "it failed or was stopped before the end)") from None
            raise VaekitError(
                f"run {run_id}: missing audio.json, config.toml or data/min_values.npy and data/max_values.npy "
                f"(logged by an older vaekit? re-run it): {str(exc).splitlines()[0]}"
            ) from None
        audio = AudioParams.from_dict(json.loads(audio_file.read_text()), source=f"run {run_id} audio.json")
        config = merge(RunConfig(), **load_toml(config_file))
    hint = plugin_hint(run.data.tags)
    model = load_model(run_id, run.info.status, hint, run=run, client=client)
    return LoggedRun(run_id, uri, model, audio, min_values.astype(np.float32), max_values.astype(np.float32), config,
                     hint, condition)


def find_run(run_or_uri: str, tracking_uri: str | None = None):
    """``(MlflowClient, Run)`` for a run reference (a run id or a ``models:/`` URI, see :mod:`vaekit.registry`).

    Checks the store first (a missing sqlite file is an error, not a new empty store); sets it as
    MLflow's tracking URI for the calls that follow.  One-line :class:`VaekitError` for an unknown
    run or model.
    """
    import mlflow

    from vaekit import registry, tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    db = tracking.sqlite_path(uri)
    if db is not None and not db.exists():
        raise VaekitError(f"tracking store {uri}: no such database (name the store with --tracking-uri)")
    tracking.check_sqlite_schema(uri)  # MlflowClient would add MLflow's tables to any other database
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    return client, registry.resolve_run(client, run_or_uri)


def load_model(run_id: str, status: str = "", plugin_hint: str = "", run=None, client=None):
    """The run's VAE, from its logged model's ``models:/MODEL_ID`` URI, with Keras ``safe_mode`` (no pickled code is run).

    The URI comes from :func:`vaekit.registry.model_uri` (the run's tag, else a search of its
    logged models, else ``runs:/RUN_ID/model`` for runs older than MLflow 3); ``run`` and ``client``
    spare looking the run up again (without them, MLflow's current tracking URI is used).
    A model holding code (a ``Lambda`` layer's bytecode) is a one-line :class:`VaekitError`; one
    whose layers come from plugin files that were not loaded is a :class:`PluginError` ending in
    ``plugin_hint`` (which files, and how to load them).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    import vaekit.model  # noqa: F401  (registers the custom Keras classes)
    from vaekit import registry

    try:
        client = client or mlflow.MlflowClient()
        run = run or client.get_run(run_id)
        uri = registry.model_uri(client, run)
        return mlflow.keras.load_model(uri, load_model_kwargs={"safe_mode": True})
    except (MlflowException, OSError) as exc:
        why = "it failed or was stopped before the end" if status != "FINISHED" else str(exc).splitlines()[0]
        raise VaekitError(f"run {run_id} has no logged model (status {status}: {why})") from None
    except Exception as exc:
        if isinstance(exc, ValueError) and "safe_mode" in str(exc):
            # Keras refused to deserialise code (a Lambda's bytecode) before running any of it.
            raise VaekitError(f"run {run_id}: its logged model holds Python code (a Lambda layer); vaekit loads "
                              "models with Keras safe_mode and does not run code from a store") from None
        if not plugin_hint:
            raise
        raise PluginError(f"run {run_id}: its model cannot be loaded ({one_line(exc, 200)}){plugin_hint}") from None


def build_vocoders(run: LoggedRun, names=(), options=()) -> dict:
    """``{name: vocode_fn}``; the run's own vocoder (with its options) when ``names`` is empty.

    ``options`` are ``vocoder.KEY=VALUE`` items applied to every vocoder named; the run's own
    vocoder starts from the options it was run with.
    """
    from vaekit.components import get_component

    extra = parse_options(options)
    if set(extra) - {"vocoder"}:
        raise ConfigError(f"--option: only vocoder.KEY=VALUE options apply here, got {', '.join(sorted(extra))}")
    out = {}
    for name in names or [run.config.vocoder]:
        with run.hinting_plugins():
            comp = get_component("vocoder", name)
        opts = run.config.option("vocoder") if name == run.config.vocoder else {}
        opts.update(extra.get("vocoder", {}))
        comp.check_options(opts)
        out[name] = (comp, comp.create(run.audio, **opts))
    return out

def load_test_set(run: LoggedRun, data=None):
    """The run's dataset (``data`` overrides its ``--data``), checked against the model's input shape.

    Returns the :class:`vaekit.data.Dataset` (``x_test`` normalised; ``info`` is its ``dataset.json``, if any).
    """
    from vaekit.components import select_dataset

    config = replace(run.config, data=str(data) if data is not None else run.config.data)
    comp = select_dataset(config)
    ds = comp.create(config.data, run.audio, **config.option("dataset"))
    if tuple(ds.shape) != run.input_shape:
        raise DataError(f"{config.data}: spectrograms are {ds.shape}, the run's model takes {run.input_shape}")
    return ds
