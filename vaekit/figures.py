"""Pictures logged with every run (matplotlib, Agg backend, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams


def color_scale(min_values, max_values) -> tuple[float, float]:
    """The fixed dB range every picture of a run uses: the dataset's normalisation range."""
    return float(np.min(min_values)), float(np.max(max_values))


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


def _mel_axes(ax, mel_db: np.ndarray, audio: AudioParams, vmin, vmax, title: str = "", labels: bool = True):
    seconds = mel_db.shape[1] * audio.hop_length / audio.sr
    im = ax.imshow(mel_db, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                   extent=(0, seconds, 0, mel_db.shape[0]))
    if labels:
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return im


def save_mel_grid(mels, path, audio: AudioParams, vmin: float, vmax: float, titles=None, columns: int | None = None,
                  suptitle: str = "") -> Path:
    """Mel spectrograms in dB (N, n_mels, frames) on a grid, one shared colour scale [vmin, vmax].

    Used for the sampled-spectrogram grid of a run and the latent-walk strip of ``vaekit interpolate``
    (``columns=N`` makes one row).
    """
    plt = _pyplot()
    mels = np.asarray(mels)
    n = len(mels)
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols + 0.8, 1.8 * rows + 0.4), dpi=100, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        # Axis labels on the left column and bottom row only, so the grid stays readable.
        im = _mel_axes(ax, mels[i], audio, vmin, vmax, titles[i] if titles else "", labels=False)
        if i % cols == 0:
            ax.set_ylabel("mel bin", fontsize=7)
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("time (s)", fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label="dB", shrink=0.9)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_reconstruction_figure(originals, reconstructions, path, audio: AudioParams, vmin: float, vmax: float,
                               labels=None) -> Path:
    """Top row: original mel spectrograms in dB; bottom row: the model's reconstructions; one colour scale."""
    plt = _pyplot()
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(2.0 * n + 0.8, 4.0), dpi=100, squeeze=False)
    im = None
    for i in range(n):
        label = labels[i] if labels else f"{i}"
        im = _mel_axes(axes[0, i], originals[i], audio, vmin, vmax, f"original {label}", labels=False)
        _mel_axes(axes[1, i], reconstructions[i], audio, vmin, vmax, f"reconstruction {label}", labels=False)
        axes[1, i].set_xlabel("time (s)", fontsize=7)
    axes[0, 0].set_ylabel("mel bin", fontsize=7)
    axes[1, 0].set_ylabel("mel bin", fontsize=7)
    fig.tight_layout()
    fig.colorbar(im, ax=axes.ravel().tolist(), label="dB", shrink=0.9)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_training_curves(history: dict[str, list[tuple[int, float]]], path) -> Path:
    """Per-epoch metrics ``{name: [(epoch, value), ...]}`` as one panel per loss term, validation dashed."""
    plt = _pyplot()
    terms = sorted(k for k in history if not k.startswith("val_"))
    fig, axes = plt.subplots(1, max(1, len(terms)), figsize=(3.2 * max(1, len(terms)), 2.8), dpi=100, squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for key, style in ((term, "-"), (f"val_{term}", "--")):
            points = sorted(history.get(key, []))
            if points:
                ax.plot([p[0] + 1 for p in points], [p[1] for p in points], style, marker="o", markersize=3,
                        label="validation" if key.startswith("val_") else "training")
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(term)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_reconstruction_grid(originals, reconstructions, path, audio: AudioParams, vmin: float, vmax: float,
                             labels=None, suptitle: str = "") -> Path:
    """Rows: original, reconstruction, |difference|; one column per clip, titled with its mean |dB| error.

    Originals and reconstructions share the colour scale [vmin, vmax]; differences have their own
    (0 … the largest difference shown), so small errors stay visible.
    """
    plt = _pyplot()
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    diff = np.abs(originals - reconstructions)
    errors = diff.reshape(len(diff), -1).mean(axis=1)
    n = len(originals)
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n + 1.2, 5.4), dpi=100, squeeze=False)
    top = float(diff.max()) if diff.size else 1.0
    im = im_diff = None
    for i in range(n):
        label = labels[i] if labels else f"{i}"
        im = _mel_axes(axes[0, i], originals[i], audio, vmin, vmax, f"{label}", labels=False)
        _mel_axes(axes[1, i], reconstructions[i], audio, vmin, vmax, "reconstruction", labels=False)
        seconds = diff.shape[2] * audio.hop_length / audio.sr
        im_diff = axes[2, i].imshow(diff[i], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=top or 1.0,
                                    extent=(0, seconds, 0, diff.shape[1]))
        axes[2, i].set_title(f"|error| {errors[i]:.2f} dB", fontsize=8)
        axes[2, i].tick_params(labelsize=6)
        axes[2, i].set_xlabel("time (s)", fontsize=7)
    for row, name in enumerate(("original", "reconstruction", "|difference|")):
        axes[row, 0].set_ylabel(f"{name}\nmel bin", fontsize=7)
    fig.suptitle(suptitle or f"mean |error| {errors.mean():.2f} dB over these {n} clips", fontsize=9)
    fig.tight_layout()
    fig.colorbar(im, ax=axes[:2].ravel().tolist(), label="dB", shrink=0.9)
    fig.colorbar(im_diff, ax=axes[2].ravel().tolist(), label="|dB|", shrink=0.9)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
