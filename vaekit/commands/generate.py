"""Listening to a logged run: ``vaekit generate``, ``vaekit interpolate`` and ``vaekit reconstruct``.

The run is loaded by :mod:`vaekit.logged` (given by its id or a ``models:/`` URI): its model, audio
parameters, settings, denormalisation arrays and, for a conditional run, its label and classes
(``--label`` asks for one of them).  Output goes to ``--out DIR`` and/or back into the run under
``generated/``, each call in a folder of its own (``generated/WHAT/STAMP/``, see :func:`_emit`), so no call
replaces another's files; logging back uses :class:`mlflow.MlflowClient` calls, which never change the
run's status (a FINISHED run stays FINISHED).

Everything that can fail (vocoding included) happens before the first file reaches ``--out`` or
the run: files are drawn in a staging folder (``generate`` decodes and vocodes there batch by
batch, so its memory does not grow with ``-n``) and moved into place once all are drawn.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams, mel_error_db, waveforms_to_mel_db
from vaekit.errors import ConfigError, DataError
from vaekit.logged import LoggedRun, build_vocoders, load_test_set, open_run
from vaekit.runlog import safe_name, safe_path, unique_stamp

GENERATED_DIR = "generated"
#: ``generate`` decodes, vocodes and writes this many samples at a time: its memory does not grow with ``-n``.
BATCH = 64
#: ``interpolate --steps`` at most: every step is held, vocoded and drawn in one strip figure.
MAX_STEPS = 64
#: ``grid.png`` shows at most this many samples (8×8): a figure of every sample would grow with ``-n``.
GRID_MAX = 64


@dataclass
class Output:
    """What a listening command wrote: local files, artifact paths logged to the run, metrics."""

    files: list[Path] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    #: Inputs that could not be read (``reconstruct``): ``{"file", "reason"}`` each.
    skipped: list[dict] = field(default_factory=list)


def _vocode_all(vocoders: dict, mel_db: np.ndarray, audio: AudioParams) -> tuple[dict, dict]:
    from vaekit.components import vocode

    waves, errors = {}, {}
    for name, (comp, fn) in vocoders.items():
        waves[name] = vocode(comp, fn, mel_db)
        errors[name] = mel_error_db(waves[name], mel_db, audio)
    return waves, errors


def _emit(run: LoggedRun, build, subdir: str, out_dir, log: bool) -> Output:
    """Write files with ``build(directory) -> ([paths], {metric: value})`` into ``out_dir`` and/or log them
    (and the metrics) under ``generated/SUBDIR/STAMP/`` (:func:`vaekit.runlog.unique_stamp`: each call its own folder).

    Files are drawn in a staging directory first, so nothing lands in ``out_dir`` if drawing fails,
    nor if any destination inside ``out_dir`` is a symbolic link (refused: vaekit never writes
    through a link).  Local files keep the names ``build`` gave them; in the run, every path
    component goes through :func:`safe_name` (a file name may hold a newline), and names that
    sanitise alike are told apart (:func:`vaekit.runlog.safe_path`).
    """
    import mlflow

    _check_destination(out_dir, log)
    where = f"{GENERATED_DIR}/{subdir}/{unique_stamp()}"
    taken: set = set()
    result = Output()
    with tempfile.TemporaryDirectory() as tmp:
        staging, logged = Path(tmp) / "files", Path(tmp) / "logged"
        staging.mkdir()
        paths, metrics = build(staging)
        rels = [path.relative_to(staging) for path in paths]
        result.metrics = dict(metrics)
        if out_dir is not None:
            for rel in rels:
                _refuse_links(Path(out_dir), rel)
        for rel in rels:
            if log:
                safe = safe_path(rel, taken)
                (logged / safe).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(staging / rel, logged / safe)
                result.artifacts.append(f"{where}/{safe.as_posix()}")
            if out_dir is not None:
                dest = Path(out_dir) / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                _replace_file(staging / rel, dest)
                result.files.append(dest)
        if log:
            client = mlflow.MlflowClient(run.tracking_uri)
            client.log_artifacts(run.run_id, str(logged), where)
            for key, value in metrics.items():
                client.log_metric(run.run_id, key, value)
    return result


def _refuse_links(out_dir: Path, rel: Path) -> None:
    """:class:`DataError` if ``out_dir/rel``, or a folder between it and ``out_dir``, is a symbolic link."""
    where = out_dir
    for part in rel.parts:
        where = where / part
        if where.is_symlink():
            raise DataError(f"{where}: is a symbolic link (to {os.readlink(where)}); not writing through it: "
                            "remove the link or choose another --out")


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)  # both in one temporary directory: no second copy of every file
    except OSError:
        shutil.copy2(src, dest)


def _replace_file(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` by renaming a finished copy over it.

    The rename replaces whatever ``dest`` is, a link made since :func:`_refuse_links` looked included,
    instead of writing into the file a link points to; and a stop midway leaves no half-written file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:64]}.partial-", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_destination(out, log: bool) -> None:
    if out is None and not log:
        raise ConfigError("--no-log needs --out DIR: the output must go somewhere")


def _write_waves(directory: Path, waves: dict, sr: int, stem: str, start: int = 0) -> list[Path]:
    """``VOCODER/STEM_II.wav`` for each vocoder's waveforms, numbered from ``start``."""
    import soundfile as sf

    paths = []
    for name, batch in waves.items():
        folder = directory / safe_name(name)  # a plugin's component name must not become "../x"
        folder.mkdir(exist_ok=True)
        for i, wave in enumerate(batch, start):
            path = folder / f"{stem}_{i:02d}.wav"
            sf.write(path, wave, sr)
            paths.append(path)
    return paths


def generate(run_id: str, n: int = 8, vocoders=(), options=(), seed: int = 0, out=None, log: bool = True,
             tracking_uri: str | None = None, run: LoggedRun | None = None,
             trust_plugins: bool = False, label: str | None = None) -> Output:
    """Decode ``n`` draws of z ~ N(0, I) (seeded), vocode with each vocoder, write WAVs and PNGs.

    Layout (under ``out``, and/or the run's ``generated/`` with a folder per call below ``seed_S/``):
    ``seed_S/sample_II.png`` (one per z),
    ``seed_S/VOCODER/sample_II.wav`` (one per z and vocoder), ``seed_S/grid.png`` (the first
    :data:`GRID_MAX` samples).  Metrics ``vocoder_mel_error_db.VOCODER`` (mean absolute dB
    difference after re-analysis, over all ``n``) and ``generate.NAME``, the run's sample metrics
    (``sample_fd``, ``sample_diversity``, …) on the first 256 samples against the run's test set,
    when its data can be loaded (:func:`vaekit.audio_metrics.for_generated`).

    A conditional run decodes every z with the class ``label`` (the folder is then ``seed_S_LABELNAME_CLASS``),
    or without it sample i with class i mod K, as the run's own samples; ``label`` for an unconditional
    run, or a class the run does not have, is a one-line error.

    Decodes, vocodes and writes :data:`BATCH` samples at a time into the staging folder, so memory
    does not grow with ``n``; nothing reaches ``out`` or the run unless every batch succeeded.
    """
    from vaekit import audio_metrics, figures
    from vaekit.model import sample_labels, sample_latent

    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    _check_destination(out, log)
    run = run or open_run(run_id, tracking_uri, trust_plugins)
    labels, subdir = None, f"seed_{seed}"
    if label is not None:
        labels = np.full(n, run.label_indices([label])[0])
        subdir = f"seed_{seed}_{safe_name(run.condition['name'])}_{safe_name(label)}"
    elif run.condition:
        labels = sample_labels(n, len(run.classes))
    vocs = build_vocoders(run, vocoders, options)
    z = sample_latent(n, run.latent_dim, seed)  # all at once (n × latent_dim, small): the draws do not depend on BATCH
    vmin, vmax = run.color_scale()
    errors = dict.fromkeys(vocs, 0.0)

    def title(i: int) -> str:
        return f"seed {seed}, sample {i}" + (f" · {run.condition['name']} {run.classes[labels[i]]}" if run.condition else "")

    def build(directory: Path) -> tuple[list[Path], dict[str, float]]:
        paths, grid, kept = [], [], []
        for start in range(0, n, BATCH):
            part = None if labels is None else labels[start:start + BATCH]
            mel_db = run.denormalize(run.model.decode(z[start:start + BATCH], part)[..., 0])
            waves, batch_errors = _vocode_all(vocs, mel_db, run.audio)
            for name, value in batch_errors.items():
                errors[name] += value * len(mel_db)  # a mean over all n, as when vocoded in one go
            paths += _write_waves(directory, waves, run.audio.sr, "sample", start)
            for i, mel in enumerate(mel_db, start):
                paths.append(figures.save_mel_png(mel, directory / f"sample_{i:02d}.png", run.audio,
                                                  title=title(i), vmin=vmin, vmax=vmax))
            grid.extend(mel_db[:max(0, GRID_MAX - len(grid))])
            kept.extend(mel_db[:max(0, audio_metrics.SAMPLE_DRAWS - len(kept))])  # for the sample metrics
            del mel_db, waves  # before the next batch: at most one batch held
        paths.append(figures.save_mel_grid(np.stack(grid), directory / "grid.png", run.audio, vmin, vmax,
                                           titles=[title(i).split(", ", 1)[1] for i in range(len(grid))],
                                           suptitle=f"seed {seed}"))
        metrics = {f"vocoder_mel_error_db.{name}": total / n for name, total in errors.items()}
        metrics.update(audio_metrics.for_generated(run, np.stack(kept), next(iter(vocs.values()))))
        return paths, metrics

    return _emit(run, build, subdir, Path(out) / subdir if out is not None else None, log)


def load_test_clips(run: LoggedRun, indices, data=None, with_labels: bool = False):
    """Test spectrograms (normalised) by index from the run's dataset (``data`` overrides its ``--data``);
    ``with_labels``: also their class indices of a conditional run's label (None for an unconditional run)."""
    ds = load_test_set(run, data)
    for i in indices:
        if not -len(ds.x_test) <= i < len(ds.x_test):
            raise ConfigError(f"--clips: test clip {i} out of range; the dataset has {len(ds.x_test)} test clips")
    if not with_labels:
        return ds.x_test[list(indices)]
    labels = None
    if run.condition:
        name = run.condition["name"]
        if name not in ds.labels or list(ds.labels[name].classes) != run.classes:
            raise DataError(f"{ds.source or 'the data'}: has no label {name} with the run's classes; "
                            "give the ends' labels with --label A B")
        labels = ds.labels[name].test[list(indices)]
    return ds.x_test[list(indices)], labels


def interpolate(run_id: str, clips=None, seeds=None, steps: int = 8, vocoders=(), options=(), data=None, out=None,
                log: bool = True, tracking_uri: str | None = None, run: LoggedRun | None = None,
                trust_plugins: bool = False, labels=None) -> Output:
    """A straight latent walk in ``steps`` points between two test clips (their z means) or two seeds' z.

    Layout: ``interpolate_clips_A_B/`` or ``interpolate_seeds_A_B/`` with ``strip.png`` (all steps in
    one row) and ``VOCODER/step_II.wav``.  A conditional run walks the label too, from ``labels[0]`` to
    ``labels[1]`` (class names; the folder gets ``_LABELNAME_A_B``), its one-hot mixed in the same
    proportion as z; seeds ``(S, S)`` make it a walk between two labels at a fixed z.  Without
    ``labels`` the ends of ``clips`` keep their own labels; between seeds the labels are needed.
    """
    from vaekit import figures
    from vaekit.model import sample_latent

    if (clips is None) == (seeds is None):
        raise ConfigError("interpolate needs exactly one of --clips A B or --seeds A B")
    if not 2 <= steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be 2 to {MAX_STEPS}, got {steps}")
    _check_destination(out, log)
    run = run or open_run(run_id, tracking_uri, trust_plugins)
    ends_labels = run.label_indices(labels) if labels is not None else None
    if clips is not None:
        x, clip_labels = load_test_clips(run, clips, data, with_labels=True)
        ends_labels = clip_labels if ends_labels is None else ends_labels
        ends, _ = run.model.encode(x[..., None], ends_labels)
        subdir, label = f"interpolate_clips_{clips[0]}_{clips[1]}", f"test clips {clips[0]} → {clips[1]}"
    else:
        if run.condition and ends_labels is None:
            raise ConfigError(f"run {run.run_id} is conditioned on {run.condition['name']}: a walk between seeds needs "
                              "--label A B (the same class twice to keep it)")
        ends = np.stack([sample_latent(1, run.latent_dim, s)[0] for s in seeds])
        subdir, label = f"interpolate_seeds_{seeds[0]}_{seeds[1]}", f"seeds {seeds[0]} → {seeds[1]}"
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    z = (1 - t) * ends[0] + t * ends[1]
    mix = None
    if run.condition:
        a, b = run.one_hot(ends_labels)
        mix = (1 - t) * a + t * b
        names = [run.classes[i] for i in ends_labels]
        if labels is not None:
            subdir += f"_{safe_name(run.condition['name'])}_{safe_name(names[0])}_{safe_name(names[1])}"
        label += f", {run.condition['name']} {names[0]} → {names[1]}"
    vocs = build_vocoders(run, vocoders, options)
    mel_db = run.denormalize(run.model.decode(z, mix)[..., 0])
    waves, errors = _vocode_all(vocs, mel_db, run.audio)
    vmin, vmax = run.color_scale()

    def build(directory: Path) -> tuple[list[Path], dict[str, float]]:
        paths = _write_waves(directory, waves, run.audio.sr, "step")
        paths.append(figures.save_mel_grid(mel_db, directory / "strip.png", run.audio, vmin, vmax,
                                           titles=[f"t={v:.2f}" for v in t[:, 0]], columns=steps, suptitle=label))
        return paths, {f"vocoder_mel_error_db.{k}": v for k, v in errors.items()}

    return _emit(run, build, subdir, Path(out) / subdir if out is not None else None, log)


#: ``reconstruct`` reads, encodes, vocodes and draws this many clips at a time (one figure per batch).
RECONSTRUCT_BATCH = 16
#: ``reconstruct`` keeps the run's vocoder's audio of at most this many clips for ``test_vocoded_mel_db``
#: (the first ones): its memory must not grow with the number of inputs.
RECONSTRUCT_VOCODED = 256


def reconstruct_inputs(paths) -> list[tuple[Path, Path]]:
    """``(file, relative output path)`` for each audio file named or found (recursively) in the folders named.

    One argument: a file maps to its own name, a folder's files to their paths inside it.  Several
    arguments: each one's outputs go under a folder named after it.  A path that is neither a
    regular file nor a folder is a :class:`DataError`; so is a folder without audio files.
    """
    from vaekit.prepare import AUDIO_EXTENSIONS, find_audio

    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("reconstruct needs at least one audio file or folder")
    items: list[tuple[Path, Path]] = []
    for p in paths:
        base = Path(safe_name(p.resolve().name)) if len(paths) > 1 else Path()
        if p.is_dir():
            files = find_audio(p)
            if not files:
                raise DataError(f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder tree")
            items += [(f, base / f.relative_to(p)) for f in files]
        elif p.is_file():
            items.append((p, base / p.name))
        else:  # before loading the model: a typo should cost no time
            raise DataError(f"{p}: not a regular file" if p.exists() else f"{p}: file not found")
    seen: dict[Path, Path] = {}
    for f, rel in items:
        if rel in seen:
            raise DataError(f"{f} and {seen[rel]} would both be written as {rel}; reconstruct them separately")
        seen[rel] = f
    return items


def reconstruct(run_id: str, inputs, vocoders=(), options=(), out=None, log: bool = False,
                tracking_uri: str | None = None, run: LoggedRun | None = None,
                trust_plugins: bool = False, label: str | None = None) -> Output:
    """Encode real clips (prepared with the run's audio parameters), decode their z means, vocode.

    ``inputs``: a file, or a list of files and folders (searched recursively for .wav/.flac/.ogg).
    The model is loaded once; clips are read, reconstructed, vocoded and drawn in batches of
    :data:`RECONSTRUCT_BATCH`.  For each input ``REL/STEM.EXT`` it writes ``REL/STEM.reconstructed.wav``
    (``STEM.reconstructed.VOCODER.wav`` with several vocoders), folder structure kept, and per batch a
    figure of originals, reconstructions and their differences with each clip's error:
    ``STEM.reconstructed.png`` for a single file, ``reconstructions_NNN.png`` otherwise.  A single file's
    output goes beside it unless ``out``; folders and several files need ``out``.  With ``log``, also
    under the run's ``generated/reconstruct_STEM/STAMP/`` (``generated/reconstruct/STAMP/`` for several).

    Metrics over all clips: ``vocoder_mel_error_db.VOCODER`` and, as ``reconstruct.NAME``, the run's
    ``--metrics`` that need no samples (``test_recon_mel_db`` …, their original being the input clip;
    ``test_vocoded_mel_db`` and ``test_audio_*``, against the input audio, over the first
    :data:`RECONSTRUCT_VOCODED`, with the first vocoder).  Files that cannot be read are
    skipped and listed in ``Output.skipped`` (all unreadable, or a single file: a :class:`DataError`).
    A conditional run encodes and decodes every input with ``label`` (a class of its label; required).
    """
    single = not isinstance(inputs, (list, tuple))
    items = reconstruct_inputs([inputs] if single else inputs)
    single = single or (len(inputs) == 1 and Path(inputs[0]).is_file())
    if not single and out is None:
        raise ConfigError("reconstructing a folder or several files needs --out DIR (the folder structure is kept there)")
    run = run or open_run(run_id, tracking_uri, trust_plugins)
    job = _Reconstruction(run, items, single, _input_class(run, label), build_vocoders(run, vocoders, options),
                          _run_metrics(run))
    subdir = f"reconstruct_{safe_name(items[0][0].stem)}" if single else "reconstruct"
    target = Path(out) if out is not None else items[0][0].parent
    result = _emit(run, job.draw, subdir, target, log)
    result.skipped = job.skipped
    return result


def _input_class(run: LoggedRun, label: str | None) -> int | None:
    """The class index ``reconstruct`` encodes and decodes with: required by a conditional run."""
    class_index = run.label_indices([label])[0] if label is not None else None
    if run.condition and class_index is None:
        raise ConfigError(f"run {run.run_id} is conditioned on {run.condition['name']}: give the inputs' class with "
                          f"--label (one of {', '.join(run.classes)})")
    return class_index


def _run_metrics(run: LoggedRun) -> list:
    """The run's ``--metrics`` components; a missing plugin's error says how to bring it in."""
    from vaekit.components import select_metrics

    with run.hinting_plugins():
        return select_metrics(run.config.metrics)


class _Reconstruction:
    """One ``reconstruct`` call's drawing (:meth:`draw`, the ``build`` of :func:`_emit`), batch by batch:
    read the clips, reconstruct and vocode them, write their files, keep what the metrics need; then
    the metrics over every clip read.  Unreadable files are listed in :attr:`skipped`."""

    def __init__(self, run: LoggedRun, items: list[tuple[Path, Path]], single: bool, class_index: int | None,
                 vocs: dict, metric_comps: list):
        self.run, self.items, self.single, self.class_index = run, items, single, class_index
        self.vocs, self.metric_comps = vocs, metric_comps
        self.vmin, self.vmax = run.color_scale()
        self.skipped: list[dict] = []
        self.errors = dict.fromkeys(vocs, 0.0)  # summed over clips, divided by their number at the end
        self.originals: list[np.ndarray] = []
        self.recons: list[np.ndarray] = []
        # The run's vocoder's audio of the first RECONSTRUCT_VOCODED clips, and their input audio.
        self.kept_waves: list[np.ndarray] = []
        self.kept_inputs: list[np.ndarray] = []

    def draw(self, directory: Path) -> tuple[list[Path], dict[str, float]]:
        paths = []
        for number, start in enumerate(range(0, len(self.items), RECONSTRUCT_BATCH)):
            batch = self.items[start:start + RECONSTRUCT_BATCH]
            ok, ys = self._read(batch)
            if not ok:
                continue
            mel, mel_hat = self._reconstruct(batch[0][0], ys)
            waves, batch_errors = _vocode_all(self.vocs, mel_hat, self.run.audio)
            for name, value in batch_errors.items():
                self.errors[name] += value * len(ok)
            paths += self._write(directory, number, ok, mel, mel_hat, waves)
            self._keep(ys, mel, mel_hat, next(iter(waves.values())))
        if not self.originals:
            raise DataError(f"none of the {len(self.items)} audio files could be read (e.g. {self.skipped[0]['file']}: "
                            f"{self.skipped[0]['reason']})")
        return paths, self._metrics()

    def _read(self, batch: list[tuple[Path, Path]]) -> tuple[list[Path], list[np.ndarray]]:
        """The output paths and waveforms of the clips that could be read; a single file must be."""
        from vaekit.prepare import ClipError, read_clip

        ok, ys = [], []
        for path, rel in batch:
            try:
                ys.append(read_clip(path, self.run.audio))
                ok.append(rel)
            except ClipError as exc:
                if self.single:
                    raise DataError(f"{path}: {exc}") from None
                self.skipped.append({"file": str(path), "reason": str(exc)})
        return ok, ys

    def _reconstruct(self, first: Path, ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The clips' mel spectrograms (dB) and the model's reconstructions of them."""
        from vaekit import audio_metrics

        run = self.run
        mel = waveforms_to_mel_db(np.stack(ys), run.audio)
        if tuple(mel.shape[1:]) != run.input_shape:
            raise DataError(f"{first}: makes a {mel.shape[1]}×{mel.shape[2]} spectrogram with the run's "
                            f"audio parameters, the model takes {run.input_shape[0]}×{run.input_shape[1]}")
        # Clip to the training range: the model never saw values outside [0, 1].
        x = np.clip(run.normalize(mel), 0.0, 1.0).astype(np.float32)
        labels = None if self.class_index is None else np.full(len(x), self.class_index)
        return mel, run.denormalize(audio_metrics.reconstructions(run.model, x, labels=labels))

    def _write(self, directory: Path, number: int, ok: list[Path], mel, mel_hat, waves: dict) -> list[Path]:
        """Each clip's WAV per vocoder, and the batch's figure of originals, reconstructions and differences."""
        import soundfile as sf

        from vaekit import figures

        paths = []
        for name, batch in waves.items():
            suffix = f".reconstructed.{safe_name(name)}.wav" if len(waves) > 1 else ".reconstructed.wav"
            for rel, wave in zip(ok, batch):
                target = directory / rel.parent / f"{rel.stem}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(target, wave, self.run.audio.sr)
                paths.append(target)
        figure = directory / (f"{ok[0].stem}.reconstructed.png" if self.single else f"reconstructions_{number:03d}.png")
        paths.append(figures.save_reconstruction_grid(mel, mel_hat, figure, self.run.audio, self.vmin, self.vmax,
                                                      labels=[rel.as_posix() for rel in ok]))
        return paths

    def _keep(self, ys: list[np.ndarray], mel, mel_hat, first_waves) -> None:
        """Hold what the metrics need: every spectrogram, and the first vocoder's audio of the first clips."""
        self.originals.append(mel)
        self.recons.append(mel_hat)
        room = max(0, RECONSTRUCT_VOCODED - len(self.kept_waves))
        self.kept_inputs.extend(ys[:room])  # the originals of the clips kept
        self.kept_waves.extend(first_waves[:room])

    def _metrics(self) -> dict[str, float]:
        from vaekit import audio_metrics

        n = sum(len(o) for o in self.originals)
        metrics = {f"vocoder_mel_error_db.{name}": total / n for name, total in self.errors.items()}
        original, reconstructed = np.concatenate(self.originals), np.concatenate(self.recons)
        vocoded = audio_metrics.Vocoded(None, reconstructed, waves=np.stack(self.kept_waves))  # all there is: no more vocoding
        # Prefixed: logged back into the run, they must not overwrite its own test metrics.
        # The input files are the original audio of the test_audio_* metrics.
        context = audio_metrics.MetricContext(reference_audio=audio_metrics.ReferenceAudio.of(np.stack(self.kept_inputs)))
        metrics.update({f"reconstruct.{k}": v for k, v in audio_metrics.compute(
            self.metric_comps, original, reconstructed, None, self.run.audio, vocoded,
            # Every clip was vocoded anyway: test_vocoded_mel_db and test_audio_* over all that were kept.
            {**self.run.config.option("metrics"), "clips": len(self.kept_waves)}, context).items()})
        return metrics
