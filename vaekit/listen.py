"""What every run logs so that its sounds can be heard, seen and made again later.

:func:`log_run_extras` is called by :func:`vaekit.run.run` inside the active MLflow run, after
the samples and before the model:

- ``data/min_values.npy``, ``data/max_values.npy``: the denormalisation arrays, so
  ``vaekit generate`` can turn decoder output back into dB without the dataset;
- ``figures/reconstructions.png``: a few test spectrograms above their reconstructions;
- ``figures/samples_grid.png``: spectrograms decoded from z ~ N(0, I) (the first ones are the
  logged ``samples/``: same seed, same draws);
- ``figures/training_curves.png``: the per-epoch loss terms, read back from the run's metrics.

:func:`log_vocoder_error` logs ``vocoder_mel_error_db`` (see :func:`vaekit.audio.mel_error_db`).
All pictures share one colour scale per run: the dataset's dB range.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from vaekit.audio import AudioParams, mel_error_db

DATA_DIR = "data"
FIGURES_DIR = "figures"
#: Spectrograms in the run's figures.
N_RECONSTRUCTIONS = 4
N_GRID = 16


def color_scale(min_values, max_values) -> tuple[float, float]:
    """The fixed dB range every picture of a run uses: the dataset's normalisation range."""
    return float(np.min(min_values)), float(np.max(max_values))


def log_vocoder_error(waveforms, mel_db, audio: AudioParams, key: str = "vocoder_mel_error_db", run_id=None) -> float:
    """Re-analyse vocoded audio and log its mean absolute mel difference in dB (to ``run_id`` or the active run)."""
    import mlflow

    value = mel_error_db(waveforms, mel_db, audio)
    if run_id is None:
        mlflow.log_metric(key, value)
    else:
        mlflow.MlflowClient().log_metric(run_id, key, value)
    return value


def log_run_extras(model, ds, config) -> None:
    """Log the denormalisation arrays and the run's three figures to the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / DATA_DIR
        data_dir.mkdir()
        np.save(data_dir / "min_values.npy", np.asarray(ds.min_values, dtype=np.float32))
        np.save(data_dir / "max_values.npy", np.asarray(ds.max_values, dtype=np.float32))
        mlflow.log_artifacts(str(data_dir), DATA_DIR)

        fig_dir = Path(tmp) / FIGURES_DIR
        fig_dir.mkdir()
        draw_run_figures(model, ds, config, fig_dir, metric_history(mlflow.active_run().info.run_id, model))
        mlflow.log_artifacts(str(fig_dir), FIGURES_DIR)


def metric_history(run_id: str, model) -> dict[str, list[tuple[int, float]]]:
    """The per-epoch values of the model's loss terms (and their ``val_`` twins) as logged to MLflow."""
    import mlflow

    client = mlflow.MlflowClient()
    out = {}
    for term in [m.name for m in model.metrics]:
        for key in (term, f"val_{term}"):
            points = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            if points:
                out[key] = points
    return out


def draw_run_figures(model, ds, config, directory: Path, history: dict) -> list[Path]:
    """Write the run's figures into ``directory``; return their paths."""
    from vaekit import figures
    from vaekit.run import sample_latent

    vmin, vmax = color_scale(ds.min_values, ds.max_values)
    paths = []
    n = min(N_RECONSTRUCTIONS, len(ds.x_test))
    x = ds.x_test[:n]
    # The mean of q(z|x): the reconstruction the model stands for, without sampling noise.
    z_mean, _ = model.encode(x[..., None])
    x_hat = model.decode(z_mean)[..., 0]
    paths.append(figures.save_reconstruction_figure(
        ds.denormalize(x), ds.denormalize(x_hat), directory / "reconstructions.png", ds.audio, vmin, vmax,
        labels=[f"test {i}" for i in range(n)]))
    z = sample_latent(N_GRID, config.latent_dim, config.seed)
    mels = ds.denormalize(model.decode(z)[..., 0])
    paths.append(figures.save_mel_grid(mels, directory / "samples_grid.png", ds.audio, vmin, vmax,
                                       titles=[f"sample {i}" for i in range(len(mels))],
                                       suptitle=f"decoded z ~ N(0, I), seed {config.seed}"))
    if history:
        paths.append(figures.save_training_curves(history, directory / "training_curves.png"))
    return paths
