"""``vaekit run`` as a Python function: data → model → fit → evaluate → sample → vocode → log.

:func:`run` checks everything it can before an MLflow run starts (components, options,
data, model shapes, the tracking store), so bad input never leaves a run behind.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vaekit import __version__, distribute
from vaekit.components import Component, all_components, get_component
from vaekit.config import RunConfig
from vaekit.errors import DataError, PluginError, ShapeError, TrainingError, one_line
from vaekit.audio import AudioParams
from vaekit.listen import color_scale, log_run_extras, log_vocoder_error
from vaekit.plugins import plugin_files


@dataclass
class RunResult:
    """What a finished run produced."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    artifact_uri: str
    metrics: dict[str, float]
    samples: list[str] = field(default_factory=list)


@dataclass
class Components:
    encoder: Component
    decoder: Component
    loss: Component
    vocoder: Component
    dataset: Component


def select_dataset(config: RunConfig) -> Component:
    """``--dataset NAME``, else the dataset whose ``detect`` accepts ``--data PATH``, else ``synthetic``."""
    if config.dataset:
        return get_component("dataset", config.dataset)
    if config.data is None:
        return get_component("dataset", "synthetic")
    path = Path(config.data)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or directory")
    for comp in all_components("dataset").values():
        detect = comp.meta.get("detect")
        if detect is not None and detect(path):
            return comp
    raise DataError(
        f"--data {path}: not a notebook-format directory (x_train.npy, x_test.npy, min_values.npy, "
        "max_values.npy) nor a folder of audio files; name a dataset with --dataset"
    )


def resolve_components(config: RunConfig) -> Components:
    """Look up every component and check its options (no TensorFlow needed)."""
    comps = Components(
        encoder=get_component("encoder", config.encoder),
        decoder=get_component("decoder", config.decoder),
        loss=get_component("loss", config.loss),
        vocoder=get_component("vocoder", config.vocoder),
        dataset=select_dataset(config),
    )
    for kind in config.options:
        getattr(comps, kind).check_options(config.option(kind))
    return comps


def load_dataset(config: RunConfig, comps: Components):
    """Build the dataset component and check what it returned."""
    from vaekit.data import Dataset

    ds = comps.dataset.create(config.data, AudioParams(), **config.option("dataset"))
    if not isinstance(ds, Dataset):
        raise PluginError(f"dataset {comps.dataset.name!r} (from {comps.dataset.plugin}) must return a vaekit.data.Dataset, got {type(ds).__name__}")
    return ds


def build_model(config: RunConfig, comps: Components, ds):
    """Build encoder, decoder and loss; check their shapes against the contract before training."""
    from vaekit.model import VAE

    x_shape = (*ds.shape, 1)
    d = config.latent_dim
    encoder = _create_for_data(comps.encoder, ds, x_shape, d, **config.option("encoder"))
    decoder = _create_for_data(comps.decoder, ds, d, x_shape, **config.option("decoder"))
    check_model_shapes(encoder, decoder, comps, x_shape, d)
    model = VAE(encoder, decoder, seed=config.seed, name="vae")
    loss_fn = comps.loss.create(**config.option("loss"))
    try:
        terms = model.set_loss(loss_fn, ds.x_train[:2, ..., None])
    except PluginError as exc:
        raise PluginError(f"loss {comps.loss.name!r} (from {comps.loss.plugin}): {exc}") from None
    except Exception as exc:
        raise PluginError(f"loss {comps.loss.name!r} (from {comps.loss.plugin}) failed on a batch: {one_line(exc)}") from None
    model.compile(**distribute.compile_options(config))
    model(ds.x_train[:1, ..., None])  # build, so the saved model has its weights
    return model, terms


def _create_for_data(comp: Component, ds, *args, **options):
    """``comp.create``; a :class:`ShapeError` (the data's size does not fit) also names the data."""
    try:
        return comp.create(*args, **options)
    except ShapeError as exc:
        raise ShapeError(f"{ds.source or 'the dataset'}: {ds.shape[0]}×{ds.shape[1]} spectrograms do not fit "
                         f"{comp.kind} {comp.name!r} (from {comp.plugin}): {exc}") from None


def check_model_shapes(encoder, decoder, comps: Components, x_shape, d: int) -> None:
    """Raise :class:`PluginError` (expected vs got) if encoder or decoder break the contract."""
    import keras

    for comp, model in ((comps.encoder, encoder), (comps.decoder, decoder)):
        if not isinstance(model, keras.Model):
            raise PluginError(f"{comp.kind} {comp.name!r} (from {comp.plugin}) must return a keras.Model, got {type(model).__name__}")
    x = np.zeros((2, *x_shape), dtype="float32")
    try:
        out = encoder(x)
    except Exception as exc:
        raise PluginError(f"encoder {comps.encoder.name!r} (from {comps.encoder.plugin}) fails on input of shape {x.shape}: {one_line(exc)}; "
                          "its keras.Input must have shape=input_shape") from None
    got = [tuple(o.shape) for o in out] if isinstance(out, (list, tuple)) else [tuple(out.shape)]
    if got != [(2, d), (2, d)]:
        raise PluginError(
            f"encoder {comps.encoder.name!r} (from {comps.encoder.plugin}): expected outputs (z_mean, z_log_var) "
            f"of shapes [(batch, {d}), (batch, {d})], got {got} for a batch of 2"
        )
    try:
        y = decoder(np.zeros((2, d), dtype="float32"))
    except Exception as exc:
        raise PluginError(f"decoder {comps.decoder.name!r} (from {comps.decoder.plugin}) fails on z of shape (2, {d}): {one_line(exc)}") from None
    got_y = [tuple(o.shape) for o in y] if isinstance(y, (list, tuple)) else tuple(y.shape)
    if got_y != (2, *x_shape):
        raise PluginError(
            f"decoder {comps.decoder.name!r} (from {comps.decoder.plugin}): expected output of shape "
            f"(batch, {', '.join(map(str, x_shape))}), got {got_y} for a batch of 2"
        )


def split_validation(x: np.ndarray, fraction: float, seed: int):
    """A seeded random hold-out of ``fraction`` of the training set (none when 0)."""
    if fraction <= 0 or len(x) < 2:
        return x, None
    n_val = min(max(1, int(round(len(x) * fraction))), len(x) - 1)  # never an empty training set
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order[n_val:]], x[order[:n_val]]


def vocode(vocoder_fn, mel_db: np.ndarray, comp: Component) -> np.ndarray:
    """Run a vocoder and check its output: (N, samples), finite."""
    try:
        audio = np.asarray(vocoder_fn(mel_db), dtype=np.float32)
    except Exception as exc:
        raise PluginError(
            f"vocoder {comp.name!r} (from {comp.plugin}) failed on mel spectrograms of shape {mel_db.shape}: "
            f"{one_line(exc)}"
        ) from None
    if audio.ndim != 2 or audio.shape[0] != mel_db.shape[0]:
        raise PluginError(
            f"vocoder {comp.name!r} (from {comp.plugin}): expected waveforms of shape ({mel_db.shape[0]}, samples) "
            f"for mel spectrograms of shape {mel_db.shape}, got {audio.shape}"
        )
    if not np.isfinite(audio).all():
        raise PluginError(f"vocoder {comp.name!r} (from {comp.plugin}) returned NaN or Inf samples")
    return audio


def check_vocoder(vocoder_fn, comp: Component, ds) -> None:
    """Pre-flight: vocode one dummy spectrogram, so a broken vocoder fails in seconds, before training.

    The dummy has the data's shape (a vocoder may need the exact frame count) and a constant
    level mid-way through the data's dB range: Griffin-Lim's NNLS converges on it at once,
    where a real clip costs it seconds.
    """
    mel_db = ds.denormalize(np.full((1, *ds.shape), 0.5, dtype=np.float32)).astype(np.float32)
    try:
        vocode(vocoder_fn, mel_db, comp)
    except PluginError as exc:
        raise PluginError(f"{exc} (pre-flight check on a dummy spectrogram, before training)") from None


def safe_name(text: str) -> str:
    """A string safe as one artifact path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def _params(config: RunConfig, comps: Components, ds, resolved_options: dict) -> dict:
    params = {k: v for k, v in config.to_dict().items() if k not in ("options", "tracking_uri")}
    for kind in ("encoder", "decoder", "loss", "vocoder", "dataset"):
        comp = getattr(comps, kind)
        params[kind] = comp.name
        params[f"{kind}.plugin"] = comp.plugin
        params[f"{kind}.plugin_version"] = comp.plugin_version
        for key, value in resolved_options[kind].items():
            params[f"{kind}.{key}"] = value
    for key, value in ds.audio.to_dict().items():
        params[f"audio.{key}"] = value
    params["data.train"] = len(ds.x_train)
    params["data.test"] = len(ds.x_test)
    params["data.shape"] = "x".join(map(str, ds.shape))
    return {k: ("None" if v is None else v) for k, v in params.items()}


def run(config: RunConfig, progress: bool = True, resume: str | None = None) -> RunResult:
    """Train, evaluate, sample, vocode and log one run; return where it went.

    Raises :class:`vaekit.errors.VaekitError` subclasses for input the user can fix;
    these are raised before the MLflow run starts whenever they can be detected then.
    With ``resume`` (a KILLED or FAILED run's id, ``config`` from
    :func:`vaekit.checkpoint.resume_config`) training continues in that run from its last checkpoint.
    """
    from vaekit import checkpoint, tracking

    config.validate()
    if config.data and Path(config.data).exists():
        # Absolute, so config.toml (and --resume from another directory) finds the data again.
        config = replace(config, data=str(Path(config.data).resolve()))
    comps = resolve_components(config)
    resolved = {k: getattr(comps, k).resolved_options(config.option(k)) for k in
                ("encoder", "decoder", "loss", "vocoder", "dataset")}
    ds = load_dataset(config, comps)
    # The store before TensorFlow: a store that cannot be used must cost no model building or training time.
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    artifact_location = None
    if not distribute.is_chief(config.strategy):
        # Only the chief of a multi-worker run logs to the store; the others log (store and artifacts
        # alike) into a scratch folder removed when the process exits.
        import atexit
        import shutil

        scratch = Path(tempfile.mkdtemp(prefix="vaekit-worker-"))
        atexit.register(shutil.rmtree, scratch, True)
        uri, artifact_location = f"sqlite:///{scratch}/mlflow.db", (scratch / "artifacts").as_uri()
    experiment_id = tracking.check_store(uri, config.experiment, artifact_location)

    import keras
    import mlflow

    strategy = distribute.make_strategy(config.strategy)  # first: multi-worker collectives need it so
    if getattr(config, "deterministic", False):
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    model, terms = distribute.build(build_model, strategy, config, comps, ds)
    vocoder_fn = comps.vocoder.create(ds.audio, **config.option("vocoder"))
    check_vocoder(vocoder_fn, comps.vocoder, ds)
    ckpt = checkpoint.load(resume, uri) if resume else None
    if ckpt:
        checkpoint.restore(model, ckpt)

    tags = {"vaekit.version": __version__, "vaekit.dataset": comps.dataset.name, **checkpoint.owner_tags()}
    files = plugin_files()
    if files:  # so a later process (generate, a sweep worker, a resume) can load them again
        tags["vaekit.plugin_files"] = json.dumps(files)
    from vaekit.sweep import child_tags

    tags.update(child_tags())  # parent run and grid point when a sweep started this run
    # Training keeps the last completed epoch in memory; a stop anywhere in the run (Ctrl-C, SIGTERM,
    # an exception) writes it before tracked_run ends the run KILLED or FAILED, so --resume has it.
    checkpointer = checkpoint.Checkpointer(model, config.checkpoint_interval)
    with tracking.tracked_run(experiment_id, run_name=config.run_name, tags=tags, run_id=resume) as active, \
            checkpointer.kept_on_stop():
        if ckpt:
            checkpoint.mark_resumed(resume, ckpt)
        else:
            mlflow.log_params({**_params(config, comps, ds, resolved), **distribute.run_params(strategy)})
            mlflow.log_text(config.to_toml(), "config.toml")
            mlflow.log_dict(ds.audio.to_dict(), "audio.json")

        metrics = fit(model, ds, config, progress, initial_epoch=ckpt.epoch if ckpt else 0, checkpointer=checkpointer)
        metrics.update({f"test_{k}": v for k, v in evaluate(model, ds.x_test, config.batch_size).items()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("test_")})

        sample_names = log_samples(model, ds, vocoder_fn, comps.vocoder, config)
        log_run_extras(model, ds, config)  # denormalisation arrays and figures, for vaekit generate and the UI
        log_model(model)
        result = RunResult(active.info.run_id, experiment_id, uri, active.info.artifact_uri, metrics, sample_names)
    checkpoint.discard(result.artifact_uri)  # FINISHED runs are not resumed: no 60 MB per run left behind
    return result


class _EpochLogger:
    """Keras callback pieces: per-epoch MLflow metrics, the loss's epoch, and a NaN stop."""

    def __new__(cls, model):
        import keras
        import mlflow

        class EpochLogger(keras.callbacks.Callback):
            # Keras then runs the batch hook in a worker thread: reading the loss there does not
            # stall the training loop each batch (a NaN raised there re-raises in fit's thread).
            async_safe = True

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch
                model.epoch.assign(float(epoch))

            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not np.isfinite(float(loss)):
                    raise TrainingError(
                        f"the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                        "try a lower --learning-rate or a smaller loss.lambda"
                    )

            def on_epoch_end(self, epoch, logs=None):
                mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

        return EpochLogger()


def epoch_batches(x: np.ndarray, seed: int, first_epoch: int, epochs: int, batch_size: int):
    """Batches of ``x`` for epochs ``first_epoch .. epochs-1``, each epoch in :func:`vaekit.checkpoint.epoch_order`.

    One ``tf.data`` pipeline for all epochs, so one ``fit`` call trains them all (a ``fit`` per epoch
    cost ~35 ms of set-up between epochs), gathering each batch from ``x`` as Keras' own array
    pipeline does for ``shuffle=True``, without a permuted copy of the data per epoch.
    """
    import tensorflow as tf

    from vaekit import checkpoint

    orders = np.stack([checkpoint.epoch_order(len(x), seed, e) for e in range(first_epoch, epochs)])
    data = tf.convert_to_tensor(x)
    batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    # No tf.data autotuning: a gather needs no tuning, and the autotuner's thread made deleting the
    # iterator at the end of fit wait up to ~7 s (seen with 3000 clips on 2 cores).
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.map(lambda idx: tf.gather(data, idx)).prefetch(2).with_options(options)


def fit(model, ds, config: RunConfig, progress: bool, initial_epoch: int = 0, checkpointer=None,
        callbacks: list | None = None) -> dict[str, float]:
    """Train ``model`` on the dataset from ``initial_epoch``; return training seconds and samples/s.

    Each epoch visits the examples in the order :func:`vaekit.checkpoint.epoch_order` gives, so a
    resumed run trains as an uninterrupted one, and is handed to ``checkpointer`` (by default a
    :class:`vaekit.checkpoint.Checkpointer` with ``config.checkpoint_interval``), which writes
    checkpoints into the active run.  A write in flight is complete when this returns.
    ``callbacks``: more Keras callbacks, called after vaekit's own.
    """
    import sys

    from vaekit import checkpoint

    x_train, x_val = split_validation(ds.x_train, config.validation_split, config.seed)
    x_train = x_train[..., None]
    validation = (x_val[..., None], x_val[..., None]) if x_val is not None else None
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    # The checkpoint's snapshot is taken before the epoch's metrics are logged (it records them, so a
    # resume re-logs metrics a stop in between lost); a due write overlaps the next epoch.
    if checkpointer is None:
        checkpointer = checkpoint.Checkpointer(model, config.checkpoint_interval)
    callbacks = [checkpointer.keras_callback(), _EpochLogger(model), *(callbacks or [])]
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(epoch_batches(x_train, config.seed, initial_epoch, config.epochs, config.batch_size),
                  epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=-(-len(x_train) // config.batch_size),
                  validation_data=validation, shuffle=False, verbose=verbose, callbacks=callbacks)
    checkpointer.wait()
    seconds = time.perf_counter() - start
    done = config.epochs - initial_epoch
    out = {"train_seconds": seconds}
    if done:
        out["train_samples_per_s"] = len(x_train) * done / seconds
    import mlflow

    mlflow.log_metrics(out)
    return out


def evaluate(model, x: np.ndarray, batch_size: int) -> dict[str, float]:
    """The loss terms on ``x`` (N, H, W), averaged over batches as Keras does."""
    x = x[..., None]
    result = model.evaluate(x, x, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


def sample_latent(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """z ~ N(0, I), seeded."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype("float32")


def log_samples(model, ds, vocoder_fn, vocoder_comp: Component, config: RunConfig) -> list[str]:
    """Decode z ~ N(0, I), denormalise, vocode; log WAVs and PNGs under ``samples/``."""
    import mlflow
    import soundfile as sf

    from vaekit.figures import save_mel_png

    if config.samples == 0:
        return []
    z = sample_latent(config.samples, config.latent_dim, config.seed)
    mel_db = ds.denormalize(model.decode(z)[..., 0])
    audio = vocode(vocoder_fn, mel_db, vocoder_comp)
    log_vocoder_error(audio, mel_db, ds.audio)
    names = []
    vmin, vmax = color_scale(ds.min_values, ds.max_values)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (wave, mel) in enumerate(zip(audio, mel_db)):
            wav = Path(tmp) / f"sample_{i:02d}.wav"
            sf.write(wav, wave, ds.audio.sr)
            save_mel_png(mel, Path(tmp) / f"sample_{i:02d}.png", ds.audio, title=f"sample {i}", vmin=vmin, vmax=vmax)
            names.append(f"samples/{wav.name}")
        mlflow.log_artifacts(tmp, "samples")
    return names


def log_model(model) -> None:
    """Log the trained VAE with MLflow's Keras flavour (a .keras file: loads with safe_mode)."""
    import keras
    import mlflow
    import tensorflow as tf

    # Explicit requirements: MLflow's inference re-imports the model and costs seconds.
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"vaekit=={__version__}"]
    mlflow.keras.log_model(model, name="model", pip_requirements=requirements)
