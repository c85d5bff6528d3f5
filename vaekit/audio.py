"""Audio parameters and the one audio → normalised-mel path every dataset uses.

The notebook's values are the defaults: sr 22050, 1 s clips, 50 mel bands and
hop_length int((sr + 1) / 50) + 1 = 442, which gives 50 frames a clip.
"""

from __future__ import annotations

import io
import wave
from dataclasses import asdict, dataclass, fields

import numpy as np

from vaekit.errors import DataError


def notebook_hop_length(sr: int, frames: int = 50) -> int:
    """The notebook's hop length: ``int((sr + 1) / frames) + 1`` (442 at 22050 Hz)."""
    return int((sr + 1) / frames) + 1


@dataclass(frozen=True)
class AudioParams:
    """How waveforms became mel spectrograms; vocoders need the same values to go back."""

    sr: int = 22050
    n_fft: int = 2048
    hop_length: int = 442
    n_mels: int = 50
    duration: float = 1.0
    fmin: float = 0.0
    fmax: float | None = None

    @property
    def samples(self) -> int:
        """Samples in one clip."""
        return int(round(self.sr * self.duration))

    @property
    def frames(self) -> int:
        """Frames in one clip's mel spectrogram (librosa's centred STFT)."""
        return 1 + self.samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "audio parameters") -> AudioParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DataError(f"{source}: unknown audio parameter(s) {', '.join(sorted(unknown))}")
        try:
            params = cls(**data)
        except TypeError as exc:
            raise DataError(f"{source}: {exc}") from None
        for name in ("sr", "n_fft", "hop_length", "n_mels"):
            value = getattr(params, name)
            if not isinstance(value, int) or value <= 0:
                raise DataError(f"{source}: {name} must be a positive integer, got {value!r}")
        if not params.duration > 0:
            raise DataError(f"{source}: duration must be positive, got {params.duration!r}")
        return params



def fit_length(y: np.ndarray, samples: int) -> np.ndarray:
    """Pad with zeros or trim ``y`` (last axis) to exactly ``samples``."""
    n = y.shape[-1]
    if n >= samples:
        return y[..., :samples]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, samples - n)]
    return np.pad(y, pad)


#: librosa.power_to_db's default dynamic range: values more than this below a clip's peak are clipped.
TOP_DB = 80.0


def mel_basis(audio: AudioParams) -> np.ndarray:
    """The mel filter bank (n_mels, 1 + n_fft // 2), as librosa.feature.melspectrogram uses it."""
    import librosa

    return librosa.filters.mel(sr=audio.sr, n_fft=audio.n_fft, n_mels=audio.n_mels, fmin=audio.fmin, fmax=audio.fmax)


def power_spectrogram(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT|² of waveforms (N, samples) → (N, frames, 1 + n_fft // 2), float32.

    librosa.stft's defaults (centred, zero padding, periodic Hann window), computed with
    scipy's FFT over strided frames: the same numbers, about twice as fast (librosa's default
    FFT is numpy's, which is slower for float32).
    """
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    pad = n_fft // 2
    padded = np.pad(y, [(0, 0), (pad, pad)])
    frames = sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    spec = scipy.fft.rfft(frames * window, axis=-1)
    return spec.real ** 2 + spec.imag ** 2


def waveforms_to_mel_db(y: np.ndarray, audio: AudioParams) -> np.ndarray:
    """Waveforms (N, samples) → mel power spectrograms in dB (N, n_mels, frames), float32.

    The same as ``power_to_db(melspectrogram(y, ...), ref=1.0)`` per clip, batched: one
    STFT call over the whole batch and one matrix product with the mel basis.  The 80 dB
    floor (``top_db``) is applied per clip, as the per-clip call does, so a clip's
    spectrogram never depends on which other clips share its batch.
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[None]
    power = power_spectrogram(y, audio.n_fft, audio.hop_length)  # (N, frames, bins)
    mel = np.einsum("mf,ntf->nmt", mel_basis(audio).astype(np.float32), power, optimize=True)
    db = librosa.power_to_db(mel, top_db=None)
    db = np.maximum(db, db.max(axis=(-2, -1), keepdims=True) - TOP_DB)
    return db.astype(np.float32)


def mel_error_db(waveforms: np.ndarray, mel_db: np.ndarray, audio: AudioParams) -> float:
    """Mean absolute difference in dB between ``mel_db`` and the mel spectrogram of ``waveforms``.

    Re-analyses the audio a vocoder produced with the same parameters: 0 means the audio has
    exactly the spectrogram it was asked for.  This is ``vocoder_mel_error_db``.
    """
    again = waveforms_to_mel_db(fit_length(np.asarray(waveforms), audio.samples), audio)
    frames = min(again.shape[-1], mel_db.shape[-1])
    return float(np.mean(np.abs(again[..., :frames] - np.asarray(mel_db)[..., :frames])))


def wav_bytes(wave_: np.ndarray, sr: int) -> bytes:
    """A mono 16-bit PCM WAV file of ``wave_`` (NaN → 0, clipped to [-1, 1]): what explore plays and the served
    generator answers (standard library only: the scoring server imports this module)."""
    pcm = (np.clip(np.nan_to_num(wave_), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
