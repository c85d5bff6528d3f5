"""Metrics: the built-in audio metrics of every run (formulas in docs/metrics.md and vaekit.audio_metrics).

Each is ``build(**options)`` → ``metric(original, reconstructed, sampled, audio, vocoded)`` → {name: number};
all are in dB or plain ratios, so they compare across datasets and normalisations.  ``test_audio_*`` also take
the ``context`` keyword (:class:`vaekit.audio_metrics.MetricContext`): they compare with the original audio,
at one analysis whatever the data's resolution, and are skipped where that audio is not known.
"""

import vaekit


def build_recon_mel_db():
    """Mean |dB| between test mel spectrograms and their reconstructions from z = μ (denormalised)."""
    from vaekit.audio_metrics import recon_mel_db

    return lambda original, reconstructed, sampled, audio, vocoded: {
        "test_recon_mel_db": recon_mel_db(original, reconstructed)}


def build_recon_mcd_db(order=12):
    """Mel-cepstral distortion between test clips and reconstructions: DCT of the dB mel spectra, coefficients 1..order."""
    from vaekit.audio_metrics import mcd_db

    return lambda original, reconstructed, sampled, audio, vocoded: {
        "test_recon_mcd_db": mcd_db(original, reconstructed, order)}


def build_vocoded_mel_db(clips=4):
    """Mean |dB| between test mel spectrograms and those of their vocoded reconstructions (the first `clips`): what a listener gets."""
    from vaekit.audio import fit_length, waveforms_to_mel_db

    def metric(original, reconstructed, sampled, audio, vocoded):
        waves = vocoded(clips)
        again = waveforms_to_mel_db(fit_length(waves, audio.samples), audio)
        ref = original[:len(waves)]
        frames = min(again.shape[-1], ref.shape[-1])
        return {"test_vocoded_mel_db": float(abs(again[..., :frames] - ref[..., :frames]).mean())}

    return metric


def build_audio_mel_db(clips=4):
    """Log-mel distance (dB) of vocoded test reconstructions from the original audio (80 mels, n_fft 1024, hop 256, 22050 Hz).

    The first `clips` test clips, the same ones test_vocoded_mel_db vocodes; skipped where the audio is not known.
    """
    from vaekit.audio_metrics import audio_mel_db, reference_pairs

    def metric(original, reconstructed, sampled, audio, vocoded, context=None):
        reference, waves = reference_pairs(context, vocoded, clips)
        return {"test_audio_mel_db": audio_mel_db(reference, waves, audio.sr)}

    return metric


def build_audio_stft_db(clips=4):
    """Multi-resolution STFT log-magnitude distance (dB; FFT 512, 1024, 2048) of vocoded test reconstructions from the original audio.

    The first `clips` test clips, at 22050 Hz; skipped where the audio is not known.
    """
    from vaekit.audio_metrics import audio_stft_db, reference_pairs

    def metric(original, reconstructed, sampled, audio, vocoded, context=None):
        reference, waves = reference_pairs(context, vocoded, clips)
        return {"test_audio_stft_db": audio_stft_db(reference, waves, audio.sr)}

    return metric


def build_sample_fd():
    """Fréchet distance between per-clip mel statistics (each band's mean and std in dB) of samples and test clips."""
    from vaekit.audio_metrics import clip_statistics, frechet_distance

    def metric(original, reconstructed, sampled, audio, vocoded):
        if sampled is None or len(sampled) == 0:
            return {}
        return {"sample_fd": frechet_distance(clip_statistics(sampled), clip_statistics(original))}

    return metric


def build_sample_diversity():
    """Mean pairwise distance of samples / that of test clips: near 0 for a collapsed model."""
    from vaekit.audio_metrics import diversity

    def metric(original, reconstructed, sampled, audio, vocoded):
        if sampled is None or len(sampled) == 0:
            return {}
        return {"sample_diversity": diversity(sampled, original)}

    return metric


def build_sample_label_accuracy(per_class=32, classifier_epochs=30):
    """Conditional runs: the share of samples of each class that a classifier trained on the run's clips assigns to it.

    Beside it ``sample_label_classifier_accuracy``, the classifier's own test accuracy; unconditional runs report neither.
    """
    from vaekit.audio_metrics import label_accuracy

    def metric(original, reconstructed, sampled, audio, vocoded, context=None):
        if context is None or not context.classes or context.train is None or context.sample is None:
            return {}  # an unconditional run (or generate, reconstruct): nothing to ask for
        return label_accuracy(context, original, per_class, classifier_epochs)

    return metric


@vaekit.hookimpl
def register_metrics(register):
    register("test_recon_mel_db", build_recon_mel_db)
    # Coefficients 1..order of an n_mels-point DCT: at most n_mels − 1 are used whatever the order.
    register("test_recon_mcd_db", build_recon_mcd_db, options={"order": {"min": 1, "max": 1024}})
    # Each clip costs a vocoder call (docs/benchmarks.md: VOCODED_CLIPS): bounded.
    register("test_vocoded_mel_db", build_vocoded_mel_db, options={"clips": {"min": 1, "max": 100_000}})
    # Against the original audio (where the data knows it): the same vocoded clips as test_vocoded_mel_db's.
    register("test_audio_mel_db", build_audio_mel_db, options={"clips": {"min": 1, "max": 100_000}})
    register("test_audio_stft_db", build_audio_stft_db, options={"clips": {"min": 1, "max": 100_000}})
    register("sample_fd", build_sample_fd)
    register("sample_diversity", build_sample_diversity)
    register("sample_label_accuracy", build_sample_label_accuracy,
             options={"per_class": {"min": 1, "max": 100_000}, "classifier_epochs": {"min": 1, "max": 10_000}})
