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


@vaekit.hookimpl
def register_vocoders(register):
    register("griffinlim", build)
