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

The formulas are in docs/metrics.md; each built-in is checked against a hand computation.
"""

from __future__ import annotations

import math
import posixpath
import re

import numpy as np

#: Clips ``vocoded()`` vocodes by default (the first of the test set): Griffin-Lim at its default 32
#: iterations costs about 2 CPU-s a clip on a 2-core machine, so a whole test set would cost minutes per run.
VOCODED_CLIPS = 4
#: Draws of z ~ N(0, I) the sample metrics see (decoding is cheap; the first ``--samples`` are the run's samples).
SAMPLE_DRAWS = 256
#: Clips compared pairwise by ``sample_diversity`` (pairs grow as the square).
DIVERSITY_CLIPS = 256
#: Test clips a plugin metric is tried on before training (enough for statistics over clips to be defined).
PREFLIGHT_CLIPS = 16
#: Mel-cepstral coefficients 1..MCD_ORDER enter the MCD (c0, the overall level, does not).
MCD_ORDER = 12


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


def reconstructions(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Normalised x (N, H, W) → the model's reconstructions from z = μ, normalised (N, H, W)."""
    out = []
    for start in range(0, len(x), batch):
        z_mean, _ = model.encode(x[start:start + batch, ..., None])
        out.append(model.decode(z_mean)[..., 0])
    return np.concatenate(out) if out else np.zeros_like(x)


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
            reserved=frozenset()) -> dict:
    """Run every metric component; ``{name: float}``.  A failing or malformed metric is a
    :class:`PluginError` naming it: one that raises, returns something other than named numbers, a name
    MLflow refuses, one of ``reserved`` (what the run logs itself, :func:`vaekit.runlog.own_metrics`) or a
    name another metric returned."""
    from vaekit.errors import PluginError, one_line

    out: dict[str, float] = {}
    given_by: dict[str, str] = {}
    for comp in metric_comps:
        fn = comp.create(**metric_options(comp, options or {}))
        try:
            values = fn(original, reconstructed, sampled, audio, vocoded)
        except PluginError:
            raise  # the vocoder's own failure (vocoded() names it), not the metric's
        except Exception as exc:
            raise PluginError(f"metric {comp.name!r} (from {comp.plugin}) failed: {one_line(exc)}") from None
        if not isinstance(values, dict):
            raise PluginError(f"metric {comp.name!r} (from {comp.plugin}) must return a dict of named numbers, "
                              f"got {type(values).__name__}")
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


def check(metric_comps, ds, options: dict | None, waves: np.ndarray, reserved=frozenset()) -> dict:
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
    # A built-in metric's component is named after the one metric it returns.
    reserved = frozenset(reserved) | {c.name for c in metric_comps if c.plugin == BUILT_IN_METRICS_PLUGIN}
    try:
        return compute(plugins, clips, clips.copy(), clips.copy(), ds.audio, Vocoded(None, clips, waves), options,
                       reserved)
    except PluginError as exc:
        raise PluginError(f"{exc} (pre-flight check on {len(clips)} test clips, before training)") from None


def metric_options(comp, options: dict) -> dict:
    """The ``--option metrics.KEY=VALUE`` items that ``comp`` takes (one option may serve several metrics)."""
    return {k: v for k, v in options.items() if k in comp.options}


def evaluate(model, ds, comps, vocoder_fn, config, reserved=frozenset()) -> dict:
    """The run's metrics (``comps["metrics"]``) on the test set, reconstructed from z = μ, and on decoded samples.

    Samples: :data:`SAMPLE_DRAWS` (or ``--samples``, if more) draws of z ~ N(0, I) with the run's seed,
    the first ``--samples`` of which are the run's logged samples.
    """
    from vaekit.components import vocode
    from vaekit.model import sample_latent

    if not comps["metrics"]:
        return {}
    original = ds.denormalize(ds.x_test)
    reconstructed = ds.denormalize(reconstructions(model, ds.x_test))
    z = sample_latent(max(config.samples, SAMPLE_DRAWS), config.latent_dim, config.seed)
    sampled = ds.denormalize(np.concatenate([model.decode(z[i:i + 256])[..., 0] for i in range(0, len(z), 256)]))
    vocoded = Vocoded(lambda mel_db: vocode(comps["vocoder"], vocoder_fn, mel_db), reconstructed)
    return compute(comps["metrics"], original, reconstructed, sampled, ds.audio, vocoded, config.option("metrics"),
                   reserved)


def for_generated(run, sampled_db: np.ndarray, vocoder) -> dict:
    """``vaekit generate``'s metrics: the run's ``--metrics`` on its samples, against the run's test set.

    ``run``: a :class:`vaekit.generate.LoggedRun`; ``vocoder``: ``(component, vocode_fn)``.  Returns
    ``generate.NAME`` for every metric that is not a ``test_*`` one (those are the run's own figures,
    which generating does not change); ``{}`` when the run's data cannot be loaded here (moved, or
    a plugin dataset not loaded).
    """
    from dataclasses import replace

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
    original = run.denormalize(x)
    reconstructed = run.denormalize(reconstructions(run.model, x))
    vocoded = Vocoded(lambda mel_db: vocode(vocoder[0], vocoder[1], mel_db), reconstructed)
    values = compute([c for c in comps if not c.name.startswith("test_")], original, reconstructed, sampled_db,
                     run.audio, vocoded, run.config.option("metrics"))
    return {f"generate.{k}": v for k, v in values.items() if not k.startswith("test_")}
