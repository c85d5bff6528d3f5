"""What a run logs to MLflow at its start and end — params, tags, metrics, artifacts.

docs/logged.md ("What every run logs to MLflow") lists every key a run logs, wherever it is written; a
test compares a real run's logged keys with that list.  Every function here logs to the active run
(started by :func:`vaekit.tracking.tracked_run`):

- :func:`log_start`: params (resolved settings, components and their plugins, options with
  defaults, audio parameters, data sizes, backend, placement), ``config.toml``, ``audio.json``;
- :func:`log_results`: training time and throughput, test metrics;
- :func:`epoch_audio` (a Keras callback, with ``--audio-every N``): every N epochs ``epochs/NNN/`` (vocoded
  reconstructions of test clips, samples of fixed z, a strip of their spectrograms), and ``epochs/original_II.wav``;
- :func:`log_samples`: ``samples/`` (WAV and PNG per z ~ N(0, I)) and ``vocoder_mel_error_db``;
- :func:`log_extras`: ``data/min_values.npy``, ``data/max_values.npy`` (to denormalise what the
  decoder makes), a conditional run's ``data/condition.json`` (its label and classes) and ``figures/``
  (reconstructions, a reconstruction grid with per-clip errors, a grid of samples, training curves);
- :func:`log_datasets` (from :func:`log_start`): the training and test data as MLflow datasets;
- :func:`log_model`: the VAE (MLflow's Keras flavour: a ``.keras`` file, loads with safe_mode), with
  its signature and an input example; its pyfunc flavour predicts reconstructions (:mod:`vaekit.serving`);
- :func:`log_generator`: the generator (a pyfunc model, see :mod:`vaekit.serving`) and the tags
  ``vaekit.model_uri`` / ``vaekit.generator_uri`` (the two models' ``models:/`` URIs).

The rest is written where it happens, during training, not here: per-epoch metrics
(:class:`vaekit.training.EpochLogger`), checkpoints and the resumed-from tag (:mod:`vaekit.checkpoint`), a failed
or killed run's error tags and traceback (:mod:`vaekit.tracking`), and a pruned trial's tags (the trial callback).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vaekit import __version__, kinds, tracking
from vaekit.audio import mel_error_db
from vaekit.components import vocode

#: Environment variable through which a sweep hands a child run its tags (read by :func:`run_tags`).
ENV_TAGS = "VAEKIT_SWEEP_TAGS"
DATA_DIR = "data"
FIGURES_DIR = "figures"
#: Spectrograms in the run's figures.
N_RECONSTRUCTIONS = 4
#: Test clips in ``figures/reconstruction_grid.png`` (original, reconstruction, error, per-clip mean |dB|).
N_RECONSTRUCTION_GRID = 8
N_GRID = 16


def safe_name(text: str) -> str:
    """A string safe as one artifact path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def unique_stamp() -> str:
    """A name part no other call or process makes: the UTC time and 48 random bits (``20260102-030405-3f9a1c2b7d6e``).

    What is logged into a finished run (``generate``, ``reconstruct --log``, explore's "keep") goes under
    such a name, so two calls, or two processes at the same moment, never replace each other's files.
    """
    import time

    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(6)}"


def safe_path(rel: Path, taken: set) -> Path:
    """``rel`` with every component through :func:`safe_name`, unlike every path in ``taken`` (then added to it).

    Names that sanitise alike (``a b.wav`` and ``a_b.wav``, ``é.wav`` and ``è.wav``) get a short hash of
    the original path before their suffix, so neither replaces the other.
    """
    import hashlib

    safe = Path(*(safe_name(part) for part in rel.parts))
    if safe in taken:
        tag = hashlib.sha256(rel.as_posix().encode()).hexdigest()[:8]
        head, dot, tail = safe.name.partition(".")
        safe = safe.with_name(f"{head}-{tag}{dot}{tail}")
    taken.add(safe)
    return safe


def run_name(config, comps) -> str:
    """``--run-name``, else a readable name that tells runs apart: ``ENCODER-LOSS[-λ…]-SUFFIX``.

    The suffix is random whatever the seed (MLflow's own names repeat when the seed does).
    """
    if config.run_name:
        return config.run_name
    parts = [comps["encoder"].name if comps["encoder"].name == comps["decoder"].name
             else f"{comps['encoder'].name}+{comps['decoder'].name}", comps["loss"].name]
    lam = comps["loss"].resolved_options(config.option("loss")).get("lambda")
    if lam is not None:
        parts.append(f"λ{lam:g}" if isinstance(lam, (int, float)) else f"λ{lam}")
    return "-".join([*parts, secrets.token_hex(2)])


def child_tags() -> dict[str, str]:
    """Tags a sweep asked this run to carry (empty when not started by a sweep)."""
    raw = os.environ.get(ENV_TAGS)
    return {str(k): str(v) for k, v in json.loads(raw).items()} if raw else {}


def run_tags(comps, backend: str) -> dict[str, str]:
    """The tags a run starts with: versions, dataset, backend, owning process, plugin files, sweep."""
    from vaekit.plugins import plugin_files

    tags = {"vaekit.version": __version__, "vaekit.dataset": comps["dataset"].name, "vaekit.backend": backend,
            **tracking.owner_tags()}
    files = plugin_files()
    if files:  # so a later process can name them again (--plugin) or, trusted, import them
        tags["vaekit.plugin_files"] = json.dumps(files)
    tags.update(child_tags())  # parent run and grid point when a sweep started this run
    return tags


def params(config, comps, ds, placement, backend_version: str) -> dict:
    """Every resolved setting, component, option (defaults included), audio parameter and data size."""
    out = {k: v for k, v in config.to_dict().items() if k not in ("options", "components", "tracking_uri")}
    for kind in kinds.names():
        if kinds.get(kind).multiple:  # several: the setting names them (resolved: the default set); options KIND.KEY
            out[kind] = ",".join(c.name for c in comps[kind])
            for key, value in config.option(kind).items():
                out[f"{kind}.{key}"] = value
            continue
        comp = comps[kind]
        if comp is None:  # an optional kind the run does not use (no discriminator): the setting says None
            continue
        out[kind] = comp.name
        out[f"{kind}.plugin"] = comp.plugin
        out[f"{kind}.plugin_version"] = comp.plugin_version
        for key, value in comp.resolved_options(config.option(kind)).items():
            out[f"{kind}.{key}"] = value
    for key, value in ds.audio.to_dict().items():
        out[f"audio.{key}"] = value
    out["data.train"] = len(ds.x_train)
    out["data.test"] = len(ds.x_test)
    out["data.shape"] = "x".join(map(str, ds.shape))
    if config.condition:
        out["condition.classes"] = ",".join(ds.labels[config.condition].classes)[:6000]  # MLflow's limit for a param
    out["backend.version"] = backend_version
    out.update(placement.params)
    return {k: ("None" if v is None else v) for k, v in out.items()}


def log_start(config, comps, ds, placement, backend_version: str) -> None:
    """Params, ``config.toml`` (which ``--config`` and ``--resume`` read back) and ``audio.json``."""
    import mlflow

    mlflow.log_params(params(config, comps, ds, placement, backend_version))
    log_datasets(comps["dataset"].name, ds)
    with tracking.all_or_nothing("config.toml"):
        mlflow.log_text(config.to_toml(), "config.toml")
    with tracking.all_or_nothing("audio.json"):
        mlflow.log_dict(ds.audio.to_dict(), "audio.json")


def data_digest(x, *more) -> str:
    """A digest of every number of ``x`` (its shape and dtype too), and of the arrays ``more`` after it
    (a dataset's labels): MLflow's own digests only the first 10,000 elements, so two datasets that
    differ in one later clip would look the same."""
    import hashlib

    h = hashlib.sha256()
    for i, arr in enumerate((x, *more)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode() if i == 0 else f"|{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:20]


def datasets(dataset_name: str, ds) -> dict:
    """``{context: MLflow dataset}`` for the run's training and test data: named ``COMPONENT:SOURCE``
    (the dataset component and its source, e.g. ``notebook:nb`` for a folder ``/data/nb``, recorded
    whole as the dataset's source), with a digest over all of
    the data (:func:`data_digest`) and the audio parameters in the profile (``audio.sr``, …).
    A dataset with labels logs them as the dataset's targets (``{NAME: class indices}``, in the digest
    too) and their classes in the profile (``labels.NAME``)."""
    from mlflow.data.numpy_dataset import NumpyDataset

    class AudioDataset(NumpyDataset):
        """A NumPy dataset whose profile also says what the spectrograms are of (and the classes of its labels)."""

        def __init__(self, features, source, name, digest, audio, targets=None, classes=None):
            self._audio = {f"audio.{k}": v for k, v in audio.to_dict().items()}
            self._audio.update({f"labels.{k}": ",".join(v) for k, v in (classes or {}).items()})
            super().__init__(features=features, source=source, name=name, digest=digest, targets=targets)

        @property
        def profile(self):
            return {**(super().profile or {}), **self._audio}

    source = _dataset_source(ds.source or dataset_name)
    shown = Path(ds.source).name if ds.source and Path(ds.source).exists() else ds.source  # the full path is the source
    name = f"{dataset_name}:{shown}" if shown else dataset_name
    classes = {k: list(lab.classes) for k, lab in ds.labels.items()}
    out = {}
    for context, x in (("training", ds.x_train), ("test", ds.x_test)):
        split = "train" if context == "training" else "test"
        targets = {k: getattr(lab, split) for k, lab in ds.labels.items()} or None
        digest = data_digest(x, *(targets or {}).values())
        out[context] = AudioDataset(x, source, name, digest, ds.audio, targets, classes)
    return out


def _dataset_source(where: str):
    """A path that exists is a local source (MLflow records its URI); anything else (a built-in dataset's
    name) a code source that names it."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if Path(where).exists():
        with warnings.catch_warnings():  # MLflow registers the local source twice, and says so for every path
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            return resolve_dataset_source(str(Path(where).resolve()))
    return CodeDatasetSource({"vaekit.dataset": where})


def log_datasets(dataset_name: str, ds) -> None:
    """Log the training and test data as the run's inputs (contexts ``training`` and ``test``), which
    fills the MLflow UI's Dataset column and filter (see :func:`datasets`)."""
    import mlflow

    for context, dataset in datasets(dataset_name, ds).items():
        mlflow.log_input(dataset, context=context)


def own_metrics(terms) -> frozenset[str]:
    """The metric names a run logs itself, whose loss has the terms ``terms`` besides ``loss``: per epoch,
    training and validation (``loss``, ``TERM``, ``val_…``), ``test_…``, training time, early stopping and
    the samples' ``vocoder_mel_error_db``.  A metric component must not return one (:mod:`vaekit.audio_metrics`)."""
    names = ["loss", *terms]
    return frozenset([*names, *(f"val_{n}" for n in names), *(f"test_{n}" for n in names), "train_seconds",
                      "train_samples_per_s", "best_epoch", "stopped_epoch", "vocoder_mel_error_db"])


#: Tag of a run whose metrics skipped some (e.g. ``test_audio_*`` on spectrograms without audio): which, and why.
SKIPPED_TAG = "vaekit.metrics_skipped"


def skipped_lines(skipped: dict[str, str]) -> list[str]:
    """``{metric: reason}`` → one ``"NAME, NAME: reason"`` line per reason."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return [f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()]


def log_results(metrics: dict[str, float], skipped: dict[str, str] | None = None) -> None:
    """Training time and throughput (``train_seconds``, ``train_samples_per_s``) and ``test_*`` metrics; the metrics
    that were skipped, and why, as the tag :data:`SKIPPED_TAG`."""
    import mlflow

    mlflow.log_metrics(metrics)
    if skipped:
        mlflow.set_tag(SKIPPED_TAG, "; ".join(skipped_lines(skipped)))


#: Samples decoded, vocoded and written at a time: peak memory depends on this, not on ``--samples``.
SAMPLE_BATCH = 64


def log_samples(model, ds, vocoder, vocoder_fn, config) -> list[str]:
    """Decode z ~ N(0, I), denormalise, vocode; log WAVs and PNGs under ``samples/``.

    Works in batches of :data:`SAMPLE_BATCH`: each batch is decoded, vocoded and written to a
    temporary folder before the next one is decoded, so memory does not grow with ``--samples``
    (the files wait on disk and are logged once at the end).  ``vocoder_mel_error_db`` is the mean
    over every sample, as before (each batch's mean weighted by its size).
    """
    import mlflow
    import soundfile as sf

    from vaekit.figures import color_scale, save_mel_png
    from vaekit.model import sample_latent

    if config.samples == 0:
        return []
    # All z at once (samples × latent_dim floats, small): the same draws whatever the batch size.
    z = sample_latent(config.samples, config.latent_dim, config.seed)
    labels, titles = sample_conditions(config, ds, len(z))
    names = []
    error_sum = 0.0
    vmin, vmax = color_scale(ds.min_values, ds.max_values)
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(z), SAMPLE_BATCH):
            part = None if labels is None else labels[start:start + SAMPLE_BATCH]
            mel_db = ds.denormalize(model.decode(z[start:start + SAMPLE_BATCH], part)[..., 0])
            audio = vocode(vocoder, vocoder_fn, mel_db)
            error_sum += mel_error_db(audio, mel_db, ds.audio) * len(mel_db)
            for i, (wave, mel) in enumerate(zip(audio, mel_db), start):
                wav = Path(tmp) / f"sample_{i:02d}.wav"
                sf.write(wav, wave, ds.audio.sr)
                save_mel_png(mel, Path(tmp) / f"sample_{i:02d}.png", ds.audio, title=titles[i], vmin=vmin,
                             vmax=vmax)
                names.append(f"samples/{wav.name}")
            del mel_db, audio  # before the next batch is decoded: at most one batch held
        mlflow.log_metric("vocoder_mel_error_db", error_sum / len(z))
        with tracking.all_or_nothing("samples"):
            mlflow.log_artifacts(tmp, "samples")
    return names


#: ``--audio-every``: test clips reconstructed and fixed z decoded each time (each is vocoded: that is the cost).
EPOCH_CLIPS = 2
EPOCH_SAMPLES = 2
EPOCHS_DIR = "epochs"


def epoch_audio(model, ds, vocoder, vocoder_fn, config, reference=None) -> list:
    """``[a Keras callback]`` that logs what the model sounds like every ``config.audio_every`` epochs; ``[]`` when 0.

    After epoch E (1-based) with E divisible by N it logs under ``epochs/EEE/``: ``reconstruction_II.wav``
    (the first :data:`EPOCH_CLIPS` test clips, encoded to μ, decoded and vocoded with the run's vocoder),
    ``sample_II.wav`` (the first :data:`EPOCH_SAMPLES` of the run's samples: the same z as ``samples/``, drawn
    by :func:`vaekit.model.sample_latent` from the run's seed, not from the training's random state) and
    ``strip.png`` (their spectrograms beside the originals').  The first time it also logs
    ``epochs/original_II.wav``: the clips' original audio (``reference``, a
    :class:`vaekit.audio_metrics.ReferenceAudio`, where known; else their test spectrograms vocoded).
    It only reads the model (encode and decode, no random draws), so training is the same with or without it.
    """
    if not config.audio_every:
        return []
    import keras

    from vaekit.model import sample_latent

    x = ds.x_test[:EPOCH_CLIPS]
    x_labels = ds.labels[config.condition].test[:EPOCH_CLIPS] if config.condition else None
    z = sample_latent(EPOCH_SAMPLES, config.latent_dim, config.seed)
    z_labels, titles = sample_conditions(config, ds, EPOCH_SAMPLES)  # a conditional run's samples' classes
    every = config.audio_every

    class EpochAudio(keras.callbacks.Callback):
        originals_logged = False

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % every:
                return
            originals = None
            if not self.originals_logged:
                originals = _original_waves(ds, x, vocoder, vocoder_fn, reference)
            log_epoch_audio(model, ds, vocoder, vocoder_fn, x, z, epoch + 1, originals, x_labels, z_labels, titles)
            self.originals_logged = True

    return [EpochAudio()]


def _original_waves(ds, x, vocoder, vocoder_fn, reference) -> np.ndarray:
    """The original audio of the clips ``x`` (the first test clips), else their spectrograms vocoded."""
    from vaekit.audio_metrics import MetricSkipped

    if reference is not None:
        try:
            return reference(len(x))
        except MetricSkipped:
            pass
    return vocode(vocoder, vocoder_fn, ds.denormalize(x))


def log_epoch_audio(model, ds, vocoder, vocoder_fn, x, z, number: int, originals=None, x_labels=None,
                    z_labels=None, sample_titles=None) -> None:
    """Log ``epochs/NNN/``: the reconstructions of ``x`` and the decoded ``z``, vocoded, and one strip figure.

    A conditional run's clips and samples are encoded and decoded with their classes (``x_labels``, ``z_labels``).
    """
    import mlflow
    import soundfile as sf

    from vaekit import figures

    z_mean, _ = model.encode(x[..., None], x_labels)
    recon = ds.denormalize(model.decode(z_mean, x_labels)[..., 0])
    samples = ds.denormalize(model.decode(z, z_labels)[..., 0])
    waves = vocode(vocoder, vocoder_fn, np.concatenate([recon, samples]))  # one call: a batched vocoder batches
    vmin, vmax = figures.color_scale(ds.min_values, ds.max_values)
    sr = ds.audio.sr
    with tempfile.TemporaryDirectory() as tmp:
        epoch_dir = Path(tmp) / f"{number:03d}"
        epoch_dir.mkdir()
        for i, wave in enumerate(waves[:len(recon)]):
            sf.write(epoch_dir / f"reconstruction_{i:02d}.wav", wave, sr)
        for i, wave in enumerate(waves[len(recon):]):
            sf.write(epoch_dir / f"sample_{i:02d}.wav", wave, sr)
        mels = [m for pair in zip(ds.denormalize(x), recon) for m in pair] + list(samples)
        titles = [t for i in range(len(recon)) for t in (f"test {i}", f"reconstruction {i}")]
        titles += sample_titles or [f"sample {i}" for i in range(len(samples))]
        figures.save_mel_grid(np.stack(mels), epoch_dir / "strip.png", ds.audio, vmin, vmax, titles=titles,
                              columns=len(mels), suptitle=f"after epoch {number}")
        if originals is not None:
            for i, wave in enumerate(originals):
                sf.write(Path(tmp) / f"original_{i:02d}.wav", wave, sr)
        with tracking.all_or_nothing(f"{EPOCHS_DIR}/{number:03d}"):
            mlflow.log_artifacts(tmp, EPOCHS_DIR)


def sample_conditions(config, ds, n: int) -> tuple[np.ndarray | None, list[str]]:
    """A conditional run's classes of its ``n`` samples (:func:`vaekit.model.sample_labels`; None when
    unconditional) and each sample's title (``sample 3 · digit seven``)."""
    from vaekit.model import sample_labels

    if not config.condition:
        return None, [f"sample {i}" for i in range(n)]
    classes = ds.labels[config.condition].classes
    labels = sample_labels(n, len(classes))
    return labels, [f"sample {i} · {config.condition} {classes[c]}" for i, c in enumerate(labels)]


#: A conditional run's label and classes, beside the denormalisation arrays (read by generate, explore, serving).
CONDITION_FILE = "condition.json"


def condition_meta(config, ds) -> dict | None:
    """``{"name", "classes"}`` of a conditional run's label (None when unconditional)."""
    if not config.condition:
        return None
    return {"name": config.condition, "classes": list(ds.labels[config.condition].classes)}


def log_extras(model, ds, config) -> None:
    """Log the denormalisation arrays (and a conditional run's ``condition.json``) and the run's figures."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / DATA_DIR
        data_dir.mkdir()
        np.save(data_dir / "min_values.npy", np.asarray(ds.min_values, dtype=np.float32))
        np.save(data_dir / "max_values.npy", np.asarray(ds.max_values, dtype=np.float32))
        if config.condition:
            (data_dir / CONDITION_FILE).write_text(json.dumps(condition_meta(config, ds), indent=1))
        with tracking.all_or_nothing(DATA_DIR):
            mlflow.log_artifacts(str(data_dir), DATA_DIR)

        fig_dir = Path(tmp) / FIGURES_DIR
        fig_dir.mkdir()
        draw_run_figures(model, ds, config, fig_dir, metric_history(mlflow.active_run().info.run_id, model))
        with tracking.all_or_nothing(FIGURES_DIR):
            mlflow.log_artifacts(str(fig_dir), FIGURES_DIR)


def metric_history(run_id: str, model) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch values of the model's loss terms (and their ``val_`` twins) as logged to MLflow."""
    import mlflow

    client = mlflow.MlflowClient()
    out = {}
    for term in ["loss", *model.terms.names]:
        for key in (term, f"val_{term}"):
            points = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            if points:
                out[key] = points
    return out


def draw_run_figures(model, ds, config, directory: Path, history: dict) -> list[Path]:
    """Write the run's figures into ``directory``; return their paths."""
    from vaekit import figures
    from vaekit.audio_metrics import reconstructions
    from vaekit.model import sample_latent

    vmin, vmax = figures.color_scale(ds.min_values, ds.max_values)
    paths = []
    test_labels = ds.labels[config.condition].test if config.condition else None
    n = min(N_RECONSTRUCTIONS, len(ds.x_test))
    x = ds.x_test[:n]
    # The mean of q(z|x): the reconstruction the model stands for, without sampling noise.
    x_hat = reconstructions(model, x, labels=None if test_labels is None else test_labels[:n])
    paths.append(figures.save_reconstruction_figure(
        ds.denormalize(x), ds.denormalize(x_hat), directory / "reconstructions.png", ds.audio, vmin, vmax,
        labels=[f"test {i}" for i in range(n)]))
    m = min(N_RECONSTRUCTION_GRID, len(ds.x_test))
    x_hat = reconstructions(model, ds.x_test[:m], labels=None if test_labels is None else test_labels[:m])
    paths.append(figures.save_reconstruction_grid(
        ds.denormalize(ds.x_test[:m]), ds.denormalize(x_hat),
        directory / "reconstruction_grid.png", ds.audio, vmin, vmax, labels=[f"test {i}" for i in range(m)]))
    z = sample_latent(N_GRID, config.latent_dim, config.seed)
    labels, titles = sample_conditions(config, ds, len(z))
    mels = ds.denormalize(model.decode(z, labels)[..., 0])
    paths.append(figures.save_mel_grid(mels, directory / "samples_grid.png", ds.audio, vmin, vmax, titles=titles,
                                       suptitle=f"decoded z ~ N(0, I), seed {config.seed}"))
    if history:
        paths.append(figures.save_training_curves(history, directory / "training_curves.png"))
    return paths


#: Test spectrograms logged as the VAE's input example (and, by MLflow, as its serving example).
EXAMPLE_CLIPS = 2


def log_model(model, ds, config) -> None:
    """Log the trained VAE with MLflow's Keras flavour (a .keras file: loads with safe_mode, on any backend),
    with its signature (:func:`model_signature`) and an input example: the first :data:`EXAMPLE_CLIPS` test
    spectrograms (``input_example.json``, ``serving_input_example.json``) and, conditional (``config.condition``:
    the run's label), their labels one-hot.

    Logged through ``mlflow.models.Model.log`` with :func:`_keras_flavor`: MLflow's own ``mlflow.keras.log_model``
    writes an input example before it creates the model's folder (``mlflow/keras/save.py``, ``save_model``;
    mlflow/mlflow#16183, open in MLflow 3.18), so any example failed the log.  The pyfunc flavour's loader is
    :func:`vaekit.serving._load_pyfunc`, so that ``mlflow.pyfunc`` and ``mlflow models serve`` predict with it.
    """
    import mlflow

    example = np.ascontiguousarray(ds.x_test[:EXAMPLE_CLIPS, ..., None], dtype=np.float32)
    if model.classes:  # a conditional VAE: the clips' own labels, one-hot, as its signature names them
        from vaekit.model import one_hot

        labels = ds.labels[config.condition].test[:EXAMPLE_CLIPS]
        example = {"mel": example, "label": np.asarray(one_hot(labels, model.classes), dtype=np.float32)}
    try:
        mlflow.models.Model.log(None, flavor=_keras_flavor(model), name="model", pip_requirements=pip_requirements(config.backend),
                                signature=model_signature(model), input_example=example,
                                # Validating the example loads and runs the model again (seconds a run); the
                                # tests do it once (tests/test_safety.py).
                                validate_serving_input=False)
    except BaseException:
        _discard_unfinished_models(mlflow.active_run().info.run_id)
        raise


def pip_requirements(backend_name: str) -> list[str]:
    """What both logged models need, pinned to this process's versions: the run's backend (``config.backend``),
    Keras, vaekit and MLflow.  Given, not inferred: MLflow's inference imports the model again."""
    import keras
    import mlflow

    from vaekit import backend

    return [f"{backend.BACKENDS[backend_name][0]}=={backend.version(backend_name)}", f"keras=={keras.__version__}",
            f"vaekit=={__version__}", f"mlflow=={mlflow.__version__}"]


def _keras_flavor(model):
    """What ``mlflow.models.Model.log`` saves the VAE with: ``mlflow.keras.save_model`` into a folder made first
    (mlflow#16183), then the pyfunc flavour pointed at vaekit's loader; the Keras flavour stays as it is."""
    import types

    import mlflow.keras
    from mlflow.models.model import MLMODEL_FILE_NAME

    def save_model(path, mlflow_model, validate_serving_input=True, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)  # before the input example is written into it
        mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
        mlflow_model.flavors["python_function"]["loader_module"] = "vaekit.serving"
        mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))

    # __name__: the flavour the logged model records (what mlflow.keras.log_model records).
    return types.SimpleNamespace(__name__="mlflow.keras", save_model=save_model)


def model_signature(model):
    """The VAE's MLflow signature: a batch of spectrograms in (and, conditional, their labels one-hot), their
    reconstructions out (tensors, float32)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    shape = (-1, *tuple(model.encoder.inputs[0].shape[1:]))
    inputs = [TensorSpec(np.dtype(np.float32), shape, "mel")]
    if model.classes:
        inputs.append(TensorSpec(np.dtype(np.float32), (-1, model.classes), "label"))
    return ModelSignature(inputs=Schema(inputs),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), shape, "reconstruction")]))


def log_generator(model, ds, config) -> str:
    """Log the servable generator beside the VAE just logged by :func:`log_model`; tag both URIs; return the generator's.

    The generator (:class:`vaekit.serving.Generator`) holds the decoder, ``audio.json``, the
    denormalisation arrays and the run's vocoder (name and options); its requirements are
    :func:`pip_requirements`.
    """
    import mlflow

    from vaekit import registry, serving

    run_id = mlflow.active_run().info.run_id
    vae = mlflow.last_logged_model()
    if vae is None or vae.source_run_id != run_id or vae.name != registry.MODEL_NAME:
        raise RuntimeError("log_generator must follow log_model in the same run")  # a bug, not bad input
    mlflow.set_tag(registry.MODEL_TAG, f"models:/{vae.model_id}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = serving.save_artifacts(model.decoder, ds.audio, ds.min_values, ds.max_values, config.vocoder,
                                           config.option("vocoder"), Path(tmp), condition=condition_meta(config, ds))
        try:
            # MLflow "downloads" each local artifact into the model, one progress bar each; z is checked by
            # the generator itself, with its own messages (no input example needed).
            with _environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
                info = mlflow.pyfunc.log_model(name="generator", python_model=serving.write_code(tmp), artifacts=artifacts,
                                               pip_requirements=pip_requirements(config.backend),
                                               metadata=serving.metadata(model.latent_dim, ds.audio,
                                                                         condition_meta(config, ds)))
        except BaseException:
            _discard_unfinished_models(run_id)
            raise
    mlflow.set_tag(registry.GENERATOR_TAG, info.model_uri)
    return info.model_uri


@contextlib.contextmanager
def _environment(**variables):
    """Set environment variables for the block; restore them after."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _discard_unfinished_models(run_id: str) -> None:
    """After a failed ``log_model``: delete the files of the run's models that are not READY (a full disk
    leaves a truncated ``model.keras`` that looks whole) and mark them FAILED, where the store allows."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):
        experiment = client.get_run(run_id).info.experiment_id
        for model in client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'"):
            if model.status == LoggedModelStatus.READY:
                continue
            with contextlib.suppress(Exception):
                get_artifact_repository(model.artifact_location).delete_artifacts()
            with contextlib.suppress(Exception):
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
