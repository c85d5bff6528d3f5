"""Pictures logged with every run (matplotlib, Agg backend, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_mel_png(mel_db: np.ndarray, path, audio: AudioParams, title: str = "", vmin=None, vmax=None) -> Path:
    """One mel spectrogram in dB (n_mels, frames) as a PNG, time on x, mel bin on y."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    seconds = mel_db.shape[1] * audio.hop_length / audio.sr
    im = ax.imshow(mel_db, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                   extent=(0, seconds, 0, mel_db.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
