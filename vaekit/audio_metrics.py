"""Audio metrics: the formulas of the built-in metric components, and running the selected ones.

A metric component (kind ``metrics``, hook ``register_metrics``) is ``build(**options)`` → a callable
``metric(original, reconstructed, sampled, audio, vocoded)`` → ``{name: number}``:

- ``original``: test mel spectrograms in dB, (N, n_mels, frames);
- ``reconstructed``: their reconstructions from z = μ, denormalised to dB, same shape;
- ``sampled``: decoded z ~ N(0, I), in dB, (M, n_mels, frames), or ``None`` where there are no
  samples (``vaekit reconstruct``): a metric of samples then returns ``{}``;
- ``audio``: the :class:`vaekit.audio.AudioParams`;
- ``vocoded``: ``vocoded(n=VOCODED_CLIPS)`` returns the run's vocoder's waveforms (K, samples) of
  ``reconstructed[:K]``, K = min(n, N) (a bounded subset: vocoding is the costly part), each clip
  vocoded once and shared by every metric.

A metric that needs more declares a keyword parameter ``context``: :func:`compute` then passes it a
:class:`MetricContext` (the original waveforms of the test clips, the training set, a conditional run's
labels and a way to decode samples of one class, ...); the five positional arguments stay as they are.
A metric that cannot be computed on this data raises :class:`MetricSkipped` with the reason: it logs
nothing, and the run says why in one line.

The formulas are in docs/metrics.md; each built-in is checked against a hand computation.
"""

from __future__ import annotations

import inspect
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from vaekit.audio import AudioParams, fit_length, mel_basis, power_spectrogram, waveforms_to_mel_db

#: Clips ``vocoded()`` vocodes by default (the first of the test set): Griffin-Lim costs CPU-seconds a clip,
#: so a whole test set would add minutes to every run (figure in docs/benchmarks.md).
VOCODED_CLIPS = 4
#: Draws of z ~ N(0, I) the sample metrics see (decoding is cheap; the first ``--samples`` are the run's samples).
SAMPLE_DRAWS = 256
#: Clips compared pairwise by ``sample_diversity`` (pairs grow as the square).
DIVERSITY_CLIPS = 256
#: Test clips a plugin metric is tried on before training (enough for statistics over clips to be defined).
PREFLIGHT_CLIPS = 16
#: Mel-cepstral coefficients 1..MCD_ORDER enter the MCD (c0, the overall level, does not).
MCD_ORDER = 12
#: ``sample_label_accuracy``: conditional samples decoded per class.
LABEL_SAMPLES_PER_CLASS = 32


@dataclass
class MetricContext:
    """What a metric may ask for beyond its five arguments, by declaring a keyword parameter ``context``.

    A field is empty (None, ``[]``) where the caller has nothing to give: ``vaekit reconstruct`` and
    ``vaekit generate`` have no training set; an unconditional run has no condition.
    """

    #: The run's training spectrograms in dB, (N_train, n_mels, frames).
    train: np.ndarray | None = None
    #: A conditional run's label name (``--condition``) and its classes, in class-index order.
    condition: str | None = None
    classes: list[str] = field(default_factory=list)
    #: Class indices of ``train`` and of ``original`` (the test clips), in a conditional run.
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    #: ``sample(class_index, n)`` → ``n`` decoded draws of z ~ N(0, I) with that class, in dB (n, n_mels, frames).
    sample: Callable[[int, int], np.ndarray] | None = None
    #: The run's seed (a metric that trains something seeds it with this).
    seed: int = 0
    #: A :class:`ReferenceAudio`: ``reference_audio(n)`` → the original waveforms (K, samples) at ``audio.sr``
    #: of ``original[:K]``; ``None`` where the data's audio is not known, and ``reference_reason`` says why.
    reference_audio: ReferenceAudio | None = None
    reference_reason: str = "no original audio was given"
    #: Metric name → why it logged nothing (filled by :func:`compute`).
    skipped: dict[str, str] = field(default_factory=dict)

    def set_condition(self, condition: str, labels, sample: Callable[[int, int], np.ndarray],
                      rows: int | None = None) -> None:
        """Fill the fields of a run conditioned on ``condition``: its classes and the train and test labels
        (the first ``rows`` of each; all when None) from ``labels`` (a :class:`vaekit.data.Labels`), and ``sample``."""
        self.condition, self.classes, self.sample = condition, list(labels.classes), sample
        self.train_labels, self.test_labels = labels.train[:rows], labels.test[:rows]

    def require_reference(self) -> ReferenceAudio:
        """``reference_audio``, or :class:`MetricSkipped` with ``reference_reason``."""
        if self.reference_audio is None:
            raise MetricSkipped(self.reference_reason)
        return self.reference_audio


def recon_mel_db(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """mean |original − reconstructed| over clips, bands and frames, in dB."""
    return float(np.mean(np.abs(np.asarray(original, np.float64) - np.asarray(reconstructed, np.float64))))


def per_clip_mel_db(original: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    """mean |original − reconstructed| of each clip (N,), in dB."""
    diff = np.abs(np.asarray(original, np.float64) - np.asarray(reconstructed, np.float64))
    return diff.reshape(len(diff), -1).mean(axis=1)


def mel_cepstrum(mel_db: np.ndarray) -> np.ndarray:
    """Mel cepstra of natural-log amplitude per frame: DCT-II (orthonormal) over the bands of dB·ln(10)/20.

    (N, n_mels, frames) → (N, n_mels, frames), coefficient k on axis 1.
    """
    import scipy.fft

    return scipy.fft.dct(np.asarray(mel_db, np.float64) * (math.log(10) / 20), type=2, norm="ortho", axis=1)


def mcd_db(original: np.ndarray, reconstructed: np.ndarray, order: int = MCD_ORDER) -> float:
    """Mel-cepstral distortion: (10/ln 10)·√(2·Σ_{k=1..order} (c_k − ĉ_k)²), mean over frames and clips, in dB."""
    c, c_hat = mel_cepstrum(original), mel_cepstrum(reconstructed)
    k = min(order, c.shape[1] - 1)
    diff = c[:, 1:k + 1] - c_hat[:, 1:k + 1]
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * np.sum(diff ** 2, axis=1))))


def clip_statistics(mel_db: np.ndarray) -> np.ndarray:
    """Per-clip features (N, 2·n_mels): each band's mean and standard deviation over frames, in dB."""
    mel_db = np.asarray(mel_db, np.float64)
    return np.concatenate([mel_db.mean(axis=2), mel_db.std(axis=2)], axis=1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2·(Σa·Σb)^½) between Gaussians fitted to the rows of ``a`` and ``b``."""
    import scipy.linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) if len(a) > 1 else np.zeros((a.shape[1],) * 2)
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) if len(b) > 1 else np.zeros((b.shape[1],) * 2)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)  # numerical noise makes tiny imaginary parts
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance between the (flattened) clips of ``x``, over all pairs i < j."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    if len(flat) < 2:
        return 0.0
    sq = np.sum(flat ** 2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0)
    i, j = np.triu_indices(len(flat), k=1)
    return float(np.mean(np.sqrt(d2[i, j])))


def diversity(sampled: np.ndarray, original: np.ndarray) -> float:
    """mean pairwise distance of samples / that of test clips: 0 for a collapsed model, about 1 for test-like spread."""
    ref = mean_pairwise_distance(original[:DIVERSITY_CLIPS])
    return mean_pairwise_distance(sampled[:DIVERSITY_CLIPS]) / ref if ref > 0 else 0.0


# -- against the original audio ------------------------------------------------------------------------------

#: The one analysis the audio-reference metrics use, whatever the data's: 80 mel bands (0 Hz to Nyquist,
#: Slaney), n_fft 1024, hop 256 at 22050 Hz.  Both signals are resampled to this rate first.
REFERENCE = AudioParams(sr=22050, n_fft=1024, hop_length=256, n_mels=80)
#: FFT sizes of the multi-resolution STFT distance (hop = n_fft / 4, Hann window, centred).
STFT_SIZES = (512, 1024, 2048)
#: Power below this is this (−100 dB), as librosa.power_to_db's ``amin``.
AMIN = 1e-10
#: Each clip's dB values are floored at its original's peak minus this, in both signals (power_to_db's ``top_db``):
#: differences in what is inaudibly far below the clip's loudest part do not count.
FLOOR_DB = 80.0
#: Largest |dB| between a reloaded test clip's spectrogram and the stored one for the waveform to count as
#: the one the spectrogram was made from (float rounding and BLAS threads differ by ~1e-4 dB).
MATCH_DB = 0.01


def to_reference_rate(waves: np.ndarray, sr: int) -> np.ndarray:
    """Waveforms (N, samples) at ``sr`` → at :data:`REFERENCE`'s rate (soxr, as ``vaekit prepare`` resamples)."""
    waves = np.asarray(waves, np.float32)
    if sr == REFERENCE.sr:
        return waves
    import librosa

    return librosa.resample(waves, orig_sr=sr, target_sr=REFERENCE.sr, res_type="soxr_hq", axis=-1).astype(np.float32)


def power_db(power: np.ndarray) -> np.ndarray:
    """10·log10(max(power, :data:`AMIN`)), in float64."""
    return 10.0 * np.log10(np.maximum(np.asarray(power, np.float64), AMIN))


def floored_distance_db(reference_db: np.ndarray, other_db: np.ndarray) -> float:
    """Mean over clips of mean |max(R, f) − max(O, f)| over each clip's values, f = max(R) − :data:`FLOOR_DB` per clip.

    ``reference_db``, ``other_db``: (N, ...) dB values of the original and of the vocoded reconstruction.
    """
    ref, other = np.asarray(reference_db, np.float64), np.asarray(other_db, np.float64)
    axes = tuple(range(1, ref.ndim))
    floor = ref.max(axis=axes, keepdims=True) - FLOOR_DB
    return float(np.mean(np.abs(np.maximum(ref, floor) - np.maximum(other, floor)).mean(axis=axes)))


def reference_log_mel(waves: np.ndarray) -> np.ndarray:
    """Waveforms at the reference rate → (N, 80, frames) mel power in dB at the :data:`REFERENCE` analysis."""
    power = power_spectrogram(np.asarray(waves, np.float32), REFERENCE.n_fft, REFERENCE.hop_length)
    return power_db(np.einsum("mf,ntf->nmt", mel_basis(REFERENCE), power.astype(np.float64), optimize=True))


def _aligned(original: np.ndarray, vocoded: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    original, vocoded = to_reference_rate(original, sr), to_reference_rate(vocoded, sr)
    n = min(original.shape[-1], vocoded.shape[-1])
    return original[..., :n], vocoded[..., :n]


def audio_mel_db(original: np.ndarray, vocoded: np.ndarray, sr: int) -> float:
    """``test_audio_mel_db``: :func:`floored_distance_db` of the :func:`reference_log_mel` of both waveforms (N, samples) at ``sr``."""
    original, vocoded = _aligned(original, vocoded, sr)
    return floored_distance_db(reference_log_mel(original), reference_log_mel(vocoded))


def audio_stft_db(original: np.ndarray, vocoded: np.ndarray, sr: int) -> float:
    """``test_audio_stft_db``: the mean over :data:`STFT_SIZES` of :func:`floored_distance_db` of 20·log10 |STFT| (hop n_fft/4)."""
    original, vocoded = _aligned(original, vocoded, sr)
    return float(np.mean([floored_distance_db(power_db(power_spectrogram(original, n_fft, n_fft // 4)),
                                              power_db(power_spectrogram(vocoded, n_fft, n_fft // 4)))
                          for n_fft in STFT_SIZES]))


class MetricSkipped(Exception):
    """Raised by a metric that cannot be computed on this data; the message (one line) says why."""


class ReferenceAudio:
    """``reference_audio(n=VOCODED_CLIPS)``: the original waveforms (K, samples) at the data's rate of the first
    K = min(n, N) test clips, aligned with ``original`` (and with ``vocoded(n)``), loaded once each.

    ``load(rows)`` returns the waveforms of those test rows.  With ``check`` (``check(rows)``: the stored test
    spectrograms of those rows in dB) each loaded waveform is analysed again with the data's audio parameters
    and must give its stored spectrogram (within :data:`MATCH_DB`): otherwise :class:`MetricSkipped` says which
    clip changed.  ``names``: what to call the clips in that message.
    """

    def __init__(self, load, total: int, audio: AudioParams | None = None, check=None, names=None):
        self.load, self.total, self.audio, self.check, self.names = load, int(total), audio, check, names
        self.waves = np.zeros((0, 0), np.float32)

    @classmethod
    def of(cls, waves) -> ReferenceAudio:
        """Waveforms already in hand (``vaekit reconstruct``'s inputs)."""
        waves = np.asarray(waves, np.float32)
        return cls(lambda rows: waves[rows], len(waves))

    def __call__(self, n: int = VOCODED_CLIPS) -> np.ndarray:
        n = min(int(n), self.total)
        if len(self.waves) < n:
            rows = list(range(len(self.waves), n))
            try:
                more = np.asarray(self.load(rows), np.float32)
            except MetricSkipped:
                raise
            except Exception as exc:
                from vaekit.errors import one_line

                raise MetricSkipped(f"the original audio of the test clips cannot be loaded: {one_line(exc)}") from None
            if self.check is not None:
                self._verify(rows, more)
            self.waves = np.concatenate([self.waves, more]) if len(self.waves) else more
        return self.waves[:n]

    def _verify(self, rows, waves) -> None:
        again = waveforms_to_mel_db(fit_length(waves, self.audio.samples), self.audio)
        gap = np.abs(again - np.asarray(self.check(rows), np.float32)).reshape(len(rows), -1).max(axis=1)
        if (gap > MATCH_DB).any():
            i = int(np.argmax(gap > MATCH_DB))
            name = f" ({self.names[rows[i]]})" if self.names else ""
            raise MetricSkipped(f"test clip {rows[i]}{name} no longer gives its spectrogram ({gap[i]:.2f} dB apart): "
                                "its audio changed since the data was prepared")


def reference_pairs(context: MetricContext | None, vocoded, clips: int) -> tuple[np.ndarray, np.ndarray]:
    """(originals, vocoded reconstructions) of the first ``clips`` test clips, as many of each; :class:`MetricSkipped`
    when the original audio is not known."""
    if context is None:
        raise MetricSkipped("no metric context was given")
    reference = context.require_reference()(clips)
    waves = vocoded(len(reference))
    k = min(len(reference), len(waves))
    return reference[:k], waves[:k]


def test_audio_loader(info: dict, audio: AudioParams):
    """``(load(clips) → waveforms, names, "")`` for the test clips of a dataset whose ``dataset.json`` (``info``)
    says how to reload them, else ``(None, None, reason)``.

    ``info["test_audio"]`` (written by ``vaekit prepare`` and the synthetic voices) is
    ``{"kind": "files", "root": DIR, "clips": [...]}`` (the test clips are ``test_files`` under DIR, read with
    :func:`vaekit.prepare.read_clip`) or ``{"kind": "synthetic", "seed": S, "speakers": K, "generator_version": V,
    "clips": [...]}`` (clip i is :func:`vaekit.synth.synthesize` ``([i], S, K)``).  Data prepared before it was
    recorded is read from ``source`` and ``test_files`` the same way.
    """
    spec = info.get("test_audio") if isinstance(info, dict) else None
    names = info.get("test_files") if isinstance(info, dict) else None
    if spec is None and isinstance(info, dict) and isinstance(names, list):
        spec = _test_audio_from_source(info, names)
    if not isinstance(spec, dict):
        why = "no dataset.json" if not info else "its dataset.json does not say where the test clips' audio is"
        return None, None, f"the data holds spectrograms only ({why}), so the original audio is not known"
    kind = spec.get("kind")
    if kind == "synthetic":
        from vaekit import synth

        if spec.get("generator_version") != synth.GENERATOR_VERSION:
            return None, names, (f"the synthetic voices were made by generator version {spec.get('generator_version')}; "
                                 f"this vaekit has version {synth.GENERATOR_VERSION} (delete the cache to make them again)")
        clips, seed, speakers = list(spec.get("clips", [])), int(spec["seed"]), int(spec["speakers"])
        return (lambda rows: synth.synthesize([clips[r] for r in rows], seed, speakers, audio)[0]), names, ""
    if kind == "files":
        from pathlib import Path

        from vaekit.prepare import read_clip

        root = Path(str(spec.get("root", "")))
        if not isinstance(names, list):
            return None, None, "its dataset.json does not list the test files"
        if not root.is_dir():
            return None, names, f"the audio folder it was prepared from, {root}, is not here"
        return (lambda rows: np.stack([read_clip(root / names[r], audio) for r in rows])), names, ""
    return None, names, f"dataset.json: unknown test_audio kind {kind!r}"


def _test_audio_from_source(info: dict, names: list):
    """The ``test_audio`` spec of data prepared before it was recorded, from ``source`` and ``test_files``
    (``names``); None where they do not say."""
    source = info.get("source")
    if source == "synthetic" and isinstance(info.get("generator"), dict):
        gen = info["generator"]
        try:
            return {"kind": "synthetic", "seed": gen["seed"], "speakers": gen["speakers"],
                    "generator_version": gen["version"], "clips": [int(n.rsplit("clip", 1)[1]) for n in names]}
        except (KeyError, ValueError, IndexError, AttributeError):
            return None
    if isinstance(source, str) and source:
        return {"kind": "files", "root": source}
    return None


def context_for(ds) -> MetricContext:
    """The :class:`MetricContext` of a run on ``ds``: its test clips' original audio where ``dataset.json`` says
    how to reload it, checked against the stored spectrograms as it is loaded."""
    info, source = getattr(ds, "info", {}), getattr(ds, "source", "")  # a stand-in for a Dataset may have neither
    load, names, reason = test_audio_loader(info, ds.audio)
    if load is None:
        where = f"{source}: " if source else ""
        return MetricContext(reference_reason=f"{where}{reason}")
    if names is not None and len(names) != len(ds.x_test):
        return MetricContext(reference_reason=f"{source}: dataset.json lists {len(names)} test files for "
                                              f"{len(ds.x_test)} test clips")

    return MetricContext(reference_audio=ReferenceAudio(load, len(ds.x_test), ds.audio,
                                                        lambda rows: ds.denormalize(ds.x_test[rows]), names))


def takes_context(fn) -> bool:
    """Whether a metric callable declares a keyword parameter ``context`` (or takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "context" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def reconstructions(model, x: np.ndarray, batch: int = 256, labels=None) -> np.ndarray:
    """Normalised x (N, H, W) → the model's reconstructions from z = μ, normalised (N, H, W).

    ``labels``: each clip's class index (N,), which a conditional model encodes and decodes with.
    """
    out = []
    for start in range(0, len(x), batch):
        part = None if labels is None else labels[start:start + batch]
        z_mean, _ = model.encode(x[start:start + batch, ..., None], part)
        out.append(model.decode(z_mean, part)[..., 0])
    return np.concatenate(out) if out else np.zeros_like(x)


def train_label_classifier(x_db: np.ndarray, labels: np.ndarray, classes: int, seed: int = 0, epochs: int = 30):
    """A small CNN that tells the classes of mel spectrograms in dB apart: returns ``predict(x_db) → class indices``.

    Conv(16)–pool–Conv(32)–pool–Conv(32)–pool → Dense(64) → softmax over ``classes``, on spectrograms
    standardised with the training set's mean and deviation; Adam, batch 64, ``epochs`` passes in an
    order seeded by ``seed``.  Backend-agnostic Keras; its weights are seeded, so it trains the same each time.
    """
    import keras
    from keras import layers

    mean, std = float(np.mean(x_db)), float(np.std(x_db)) or 1.0
    prepare = lambda db: ((np.asarray(db, np.float32) - mean) / std)[..., None]  # noqa: E731
    init = [keras.initializers.GlorotUniform(seed=seed * 8 + i) for i in range(5)]
    inputs = keras.Input(shape=(*x_db.shape[1:], 1))
    h = inputs
    for i, width in enumerate((16, 32, 32)):
        h = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init[i])(h)
        h = layers.MaxPooling2D(2, padding="same")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(64, activation="relu", kernel_initializer=init[3])(h)
    outputs = layers.Dense(classes, activation="softmax", kernel_initializer=init[4])(h)
    model = keras.Model(inputs, outputs, name="label_classifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = prepare(x_db), np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):  # our own seeded order: fit's shuffle draws from the backend's global state
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=64, epochs=1, shuffle=False, verbose=0)

    def predict(db: np.ndarray) -> np.ndarray:
        return np.argmax(model.predict(prepare(db), batch_size=256, verbose=0), axis=1)

    return predict


def label_accuracy(context: MetricContext, original: np.ndarray, per_class: int = LABEL_SAMPLES_PER_CLASS,
                   epochs: int = 30) -> dict[str, float]:
    """``sample_label_accuracy``: the share of ``per_class`` conditional samples of every class that a
    classifier (:func:`train_label_classifier`, on the training clips and labels) assigns to the class
    asked for; ``sample_label_classifier_accuracy``: that classifier's accuracy on the test clips
    (``original`` and ``context.test_labels``), which says how far the first can be trusted."""
    k = len(context.classes)
    predict = train_label_classifier(context.train, context.train_labels, k, context.seed, epochs)
    test_accuracy = float(np.mean(predict(original) == np.asarray(context.test_labels)))
    hits = [np.mean(predict(context.sample(c, per_class)) == c) for c in range(k)]
    return {"sample_label_accuracy": float(np.mean(hits)), "sample_label_classifier_accuracy": test_accuracy}


class Vocoded:
    """``vocoded(n=VOCODED_CLIPS)`` for the metrics: the first ``n`` reconstructions, vocoded once each.

    Clips already vocoded are reused (several metrics, or a larger ``n`` later, pay only for new ones);
    ``waves`` given up front are all there is (``vocode_fn`` None: nothing more can be vocoded).
    """

    def __init__(self, vocode_fn, reconstructed: np.ndarray, waves=None):
        self.vocode_fn, self.reconstructed = vocode_fn, reconstructed
        self.waves = np.zeros((0, 0), np.float32) if waves is None else np.asarray(waves, np.float32)

    def __call__(self, n: int = VOCODED_CLIPS) -> np.ndarray:
        n = min(int(n), len(self.reconstructed))
        if len(self.waves) < n and self.vocode_fn is not None:
            more = np.asarray(self.vocode_fn(self.reconstructed[len(self.waves):n]), dtype=np.float32)
            self.waves = np.concatenate([self.waves, more]) if len(self.waves) else more
        return self.waves[:n]


#: What MLflow takes as a metric name (``mlflow.utils.validation``): these characters, at most 250 of them.
_METRIC_NAME = re.compile(r"[\w.\- /:]{1,250}")


def name_problem(name: str, reserved=frozenset()) -> str | None:
    """Why ``name`` cannot be a metric a component returns (MLflow would refuse it, or it is one the run logs
    itself: ``reserved``), else None."""
    if not _METRIC_NAME.fullmatch(name):
        return ("MLflow takes metric names of 1 to 250 letters, digits, _, -, ., space, / and : only"
                if name else "an empty name")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(("..", "/")):
        return f"MLflow refuses names that read as another path ({norm!r})"
    if name in reserved or name.startswith("system/"):
        return "the run logs a metric of that name itself; a metric must not replace it"
    return None


def compute(metric_comps, original, reconstructed, sampled, audio, vocoded, options: dict | None = None,
            context: MetricContext | None = None, reserved=frozenset()) -> dict:
    """Run every metric component; ``{name: float}``.  A failing or malformed metric is a
    :class:`PluginError` naming it: one that raises, returns something other than named numbers, a name
    MLflow refuses, one of ``reserved`` (what the run logs itself, :func:`vaekit.runlog.own_metrics`) or a
    name another metric returned.

    A metric declaring a keyword parameter ``context`` gets ``context`` (a default :class:`MetricContext`
    when None); one that raises :class:`MetricSkipped` gives nothing, and ``context.skipped[name]`` says why.
    """
    from vaekit.errors import PluginError, one_line

    context = context if context is not None else MetricContext()
    out: dict[str, float] = {}
    given_by: dict[str, str] = {}
    for comp in metric_comps:
        fn = comp.create(**metric_options(comp, options or {}))
        try:
            if takes_context(fn):
                values = fn(original, reconstructed, sampled, audio, vocoded, context=context)
            else:
                values = fn(original, reconstructed, sampled, audio, vocoded)
        except MetricSkipped as exc:
            context.skipped[comp.name] = str(exc)
            continue
        except PluginError:
            raise  # the vocoder's own failure (vocoded() names it), not the metric's
        except Exception as exc:
            raise PluginError(f"metric {comp.name!r} (from {comp.plugin}) failed: {one_line(exc)}") from None
        out.update(_checked_values(comp, values, reserved, given_by))
    return out


def _checked_values(comp, values, reserved, given_by: dict[str, str]) -> dict[str, float]:
    """What metric ``comp`` returned, as floats; :class:`PluginError` unless it is a dict of numbers under names
    MLflow takes that are not ``reserved`` nor in ``given_by`` (name → the metric that returned it, updated)."""
    from vaekit.errors import PluginError

    if not isinstance(values, dict):
        raise PluginError(f"metric {comp.name!r} (from {comp.plugin}) must return a dict of named numbers, "
                          f"got {type(values).__name__}")
    out: dict[str, float] = {}
    for key, value in values.items():
        problem = name_problem(key, reserved) if isinstance(key, str) else "names must be strings"
        if problem is None and key in given_by:
            problem = f"metric {given_by[key]!r} returns it too"
        if problem:
            raise PluginError(f"metric {comp.name!r} (from {comp.plugin}) returns {key!r}: {problem}")
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            raise PluginError(f"metric {comp.name!r} (from {comp.plugin}): {key!r} is not a number: {value!r}") from None
        given_by[key] = comp.name
    return out


def check(metric_comps, ds, options: dict | None, waves: np.ndarray, condition: str | None = None,
          reserved=frozenset()) -> dict:
    """Pre-flight: run every plugin metric on the first :data:`PREFLIGHT_CLIPS` test clips, so a broken
    one fails before training rather than after it (the built-ins are tested and skipped).  Its names are
    checked too (:func:`compute`): against ``reserved`` and the names of the built-ins selected.

    The clips stand in for originals, reconstructions and samples alike; ``vocoded()`` returns
    ``waves`` (the vocoder pre-flight's output), so no clip is vocoded here.  Returns what the plugin
    metrics gave (``{}`` when none ran).
    """
    from vaekit.components import BUILT_IN_METRICS_PLUGIN
    from vaekit.errors import PluginError

    plugins = [c for c in metric_comps if c.plugin != BUILT_IN_METRICS_PLUGIN]
    if not plugins:
        return {}
    clips = ds.denormalize(ds.x_test[:PREFLIGHT_CLIPS])
    train = getattr(ds, "x_train", None)  # a stand-in dataset may hold test clips only
    context = context_for(ds)
    context.train = ds.denormalize(train[:PREFLIGHT_CLIPS]) if train is not None else None
    if condition:
        # The test clips stand in for samples of every class too.
        context.set_condition(condition, ds.labels[condition], lambda c, n: clips[:n].copy(), PREFLIGHT_CLIPS)
    # A built-in metric's component is named after the one metric it returns.
    reserved = frozenset(reserved) | {c.name for c in metric_comps if c.plugin == BUILT_IN_METRICS_PLUGIN}
    try:
        return compute(plugins, clips, clips.copy(), clips.copy(), ds.audio, Vocoded(None, clips, waves), options,
                       context, reserved)
    except PluginError as exc:
        raise PluginError(f"{exc} (pre-flight check on {len(clips)} test clips, before training)") from None


def metric_options(comp, options: dict) -> dict:
    """The ``--option metrics.KEY=VALUE`` items that ``comp`` takes (one option may serve several metrics)."""
    return {k: v for k, v in options.items() if k in comp.options}


def evaluate(model, ds, comps, vocoder_fn, config, context: MetricContext | None = None,
             reserved=frozenset()) -> dict:
    """The run's metrics (``comps["metrics"]``) on the test set, reconstructed from z = μ, and on decoded samples.

    Samples: :data:`SAMPLE_DRAWS` (or ``--samples``, if more) draws of z ~ N(0, I) with the run's seed,
    the first ``--samples`` of which are the run's logged samples; in a conditional run sample i has
    class i mod K (:func:`vaekit.model.sample_labels`), and test clips are reconstructed with their own.
    ``context`` (default :func:`context_for` ``(ds)``) gets the training set and labels, and collects the
    metrics skipped and why.
    """
    from vaekit.components import vocode
    from vaekit.model import sample_labels, sample_latent

    if not comps["metrics"]:
        return {}
    context = context if context is not None else context_for(ds)
    lab = ds.labels[config.condition] if config.condition else None
    original = ds.denormalize(ds.x_test)
    reconstructed = ds.denormalize(reconstructions(model, ds.x_test, labels=lab.test if lab else None))
    z = sample_latent(max(config.samples, SAMPLE_DRAWS), config.latent_dim, config.seed)
    y = sample_labels(len(z), len(lab.classes)) if lab else None
    sampled = ds.denormalize(np.concatenate([model.decode(z[i:i + 256], None if y is None else y[i:i + 256])[..., 0]
                                             for i in range(0, len(z), 256)]))
    vocoded = Vocoded(lambda mel_db: vocode(comps["vocoder"], vocoder_fn, mel_db), reconstructed)
    context.train, context.seed = ds.denormalize(ds.x_train), config.seed
    if lab:
        def sample(c: int, n: int) -> np.ndarray:  # each class its own draws of z, seeded by the run
            return ds.denormalize(model.decode(sample_latent(n, config.latent_dim, config.seed + 1 + c),
                                               np.full(n, c))[..., 0])

        context.set_condition(config.condition, lab, sample)
    return compute(comps["metrics"], original, reconstructed, sampled, ds.audio, vocoded, config.option("metrics"),
                   context, reserved)


def for_generated(run, sampled_db: np.ndarray, vocoder) -> dict:
    """``vaekit generate``'s metrics: the run's ``--metrics`` on its samples, against the run's test set.

    ``run``: a :class:`vaekit.logged.LoggedRun`; ``vocoder``: ``(component, vocode_fn)``.  Returns
    ``generate.NAME`` for every metric that is not a ``test_*`` one (those are the run's own figures,
    which generating does not change); ``{}`` when the run's data cannot be loaded here (moved, or
    a plugin dataset not loaded).
    """
    from vaekit.components import select_dataset, select_metrics, vocode
    from vaekit.errors import VaekitError

    comps = select_metrics(run.config.metrics)
    if not comps:
        return {}
    try:
        config = replace(run.config, options={**run.config.options, "dataset": {**run.config.option("dataset"),
                                                                                 "progress": False}})
        comp = select_dataset(config)
        opts = {k: v for k, v in config.option("dataset").items() if k in comp.options}
        ds = comp.create(config.data, run.audio, **opts)
    except (VaekitError, OSError):
        return {}
    if tuple(ds.shape) != run.input_shape:
        return {}
    x = ds.x_test[:1000]  # a bounded reference: the statistics settle long before
    labels = None
    if run.condition:  # a conditional model reconstructs each clip with its own class
        lab = ds.labels.get(run.condition["name"])
        if lab is None or list(lab.classes) != run.classes:
            return {}
        labels = lab.test[:1000]
    original = run.denormalize(x)
    reconstructed = run.denormalize(reconstructions(run.model, x, labels=labels))
    vocoded = Vocoded(lambda mel_db: vocode(vocoder[0], vocoder[1], mel_db), reconstructed)
    values = compute([c for c in comps if not c.name.startswith("test_")], original, reconstructed, sampled_db,
                     run.audio, vocoded, run.config.option("metrics"))
    return {f"generate.{k}": v for k, v in values.items() if not k.startswith("test_")}
