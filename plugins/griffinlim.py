"""Vocoder ``griffinlim``: the notebook's inversion, dB → power → librosa's mel_to_audio, clip by clip."""

import vaekit


def build(audio, n_iter=32, momentum=0.99, random_state=0):
    """The notebook's inversion, clip by clip: NNLS mel → power (librosa), then Griffin-Lim (seeded)."""
    import librosa
    import numpy as np

    def vocode(mel_db):
        out = np.zeros((len(mel_db), audio.samples), dtype=np.float32)
        for i, m in enumerate(mel_db):
            # What librosa.feature.inverse.mel_to_audio does, in its two steps, so momentum is an option.
            stft = librosa.feature.inverse.mel_to_stft(
                librosa.db_to_power(np.asarray(m, dtype=np.float32)),
                sr=audio.sr, n_fft=audio.n_fft, fmin=audio.fmin, fmax=audio.fmax,
            )
            out[i] = librosa.griffinlim(
                stft, n_iter=n_iter, hop_length=audio.hop_length, n_fft=audio.n_fft,
                momentum=momentum, length=audio.samples, random_state=random_state,
            )
        return out

    return vocode


#: Each Griffin-Lim iteration is an STFT and an inverse STFT per clip (cost in docs/benchmarks.md): 10000 is far past where
#: the mel error stops improving, and anything larger only hangs sampling.  librosa refuses a
#: negative momentum and calls one above 1 unstable.  NumPy seeds take 0 … 2³² − 1.
GRIFFIN_LIM_RANGES = {"n_iter": {"min": 1, "max": 10_000}, "momentum": {"min": 0, "max": 1},
                      "random_state": {"min": 0, "max": 2**32 - 1}}


@vaekit.hookimpl
def register_vocoders(register):
    # The pre-flight check only needs to see that the vocoder runs on the data's shape: one iteration.
    register("griffinlim", build, options=GRIFFIN_LIM_RANGES, preflight={"n_iter": 1})
