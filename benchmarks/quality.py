"""Reconstruction quality per training time: ``resconv`` vs the notebook's ``conv2``, same data, same settings.

Both models are built and trained as ``vaekit run`` builds and trains them (:func:`vaekit.training.build`,
:func:`vaekit.training.fit`, into a throw-away MLflow store), with the notebook's settings (10 epochs,
batch 64, λ = 500, d = 20, Adam 1e-3, validation split 0.1), each component at its defaults.  Runs
take turns (conv2, resconv, conv2, resconv, … for ``--repeats``) so load on a shared machine hits
both alike.  Per model it prints ``test_recon_mel_db`` (mean |dB| between test mel spectrograms and
their reconstructions from z = μ; see docs/metrics.md), training wall seconds and training
CPU-seconds of this process, each as the median over repeats, and the ratios resconv / conv2.

Targets (issue 12): recon ratio ≤ 0.7 at a training-time ratio ≤ 1.5.

    python benchmarks/quality.py                          # the default dataset (synthetic voices)
    python benchmarks/quality.py --data DIR               # any dataset vaekit run takes (e.g. prepared speech)
    python benchmarks/quality.py --models conv2,resconv --repeats 2 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def train_once(name: str, options: dict, config_kwargs: dict, ds, store: str) -> dict:
    import mlflow

    from vaekit import audio_metrics, components, distribute, training
    from vaekit.config import RunConfig

    encoder, decoder = components.get_component("encoder", name), components.get_component("decoder", name)
    opts = {"encoder": {k: v for k, v in options.items() if k in encoder.options},
            "decoder": {k: v for k, v in options.items() if k in decoder.options}}
    config = RunConfig(encoder=name, decoder=name, tracking_uri=store, options=opts, **config_kwargs)
    comps = components.resolve(config)
    placement = distribute.make_placement(None, None)
    model, _ = training.build(config, comps, ds, placement)
    mlflow.set_tracking_uri(store)
    with mlflow.start_run():
        cpu = time.process_time()
        fit = training.fit(model, ds, config, progress=False)
        cpu = time.process_time() - cpu
    recon = audio_metrics.reconstructions(model, ds.x_test)
    mel_db = audio_metrics.recon_mel_db(ds.denormalize(ds.x_test), ds.denormalize(recon))
    return {"recon": mel_db, "wall": fit["train_seconds"], "cpu": cpu, "params": model.count_params(),
            "model": model, "comps": comps, "config": config}


def all_metrics(r: dict, ds) -> dict:
    """Every built-in metric of a trained model, as ``vaekit run`` computes them."""
    from vaekit import audio_metrics

    vocoder = r["comps"]["vocoder"]
    return audio_metrics.evaluate(r["model"], ds, r["comps"], vocoder.create(ds.audio), r["config"])


def side_by_side(results: dict, ds, path: str, n: int = 6) -> None:
    """Rows: n test clips, then each model's reconstruction with its per-clip mean |dB| error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vaekit import audio_metrics
    from vaekit.figures import _mel_axes, color_scale

    vmin, vmax = color_scale(ds.min_values, ds.max_values)
    original = ds.denormalize(ds.x_test[:n])
    rows = [("original", original, None)]
    for name, r in results.items():
        recon = ds.denormalize(audio_metrics.reconstructions(r[-1]["model"], ds.x_test[:n]))
        rows.append((name, recon, audio_metrics.per_clip_mel_db(original, recon)))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 1.0, 1.8 * len(rows) + 0.4), dpi=100, squeeze=False)
    for r, (name, mels, errors) in enumerate(rows):
        for i in range(n):
            im = _mel_axes(axes[r, i], mels[i], ds.audio, vmin, vmax,
                           f"test {i}" if errors is None else f"{name}: {errors[i]:.2f} dB", labels=False)
        axes[r, 0].set_ylabel(f"{name}\nmel bin", fontsize=7)
    fig.tight_layout()
    fig.colorbar(im, ax=axes.ravel().tolist(), label="dB", shrink=0.8)
    fig.savefig(path)
    plt.close(fig)


METRICS = ("test_recon_mel_db", "test_recon_mcd_db", "test_vocoded_mel_db", "sample_fd", "sample_diversity")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a dataset vaekit run takes [the default: synthetic voices]")
    parser.add_argument("--models", default="conv2,resconv", help="comma-separated encoder=decoder names")
    parser.add_argument("--option", action="append", default=[], metavar="MODEL.KEY=VALUE",
                        help="an option of one model's encoder and decoder, e.g. resconv.filters=24")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", metavar="PNG", help="also draw test clips and each model's reconstructions "
                        "(the last repeat's) side by side, and print every built-in metric of each model")
    args = parser.parse_args(argv)

    from vaekit import backend

    backend.select(None)
    from vaekit.components import load_dataset, resolve
    from vaekit.config import RunConfig, parse_value

    base = RunConfig(data=args.data)
    ds = load_dataset(base, resolve(base))
    print(f"data: {ds.source or 'synthetic'}: {len(ds.x_train)} train, {len(ds.x_test)} test, {ds.shape[0]}×{ds.shape[1]}; "
          f"{args.epochs} epochs, batch {args.batch_size}, λ=500, d=20; load {os.getloadavg()[0]:.1f}", flush=True)
    models = args.models.split(",")
    options = {m: {} for m in models}
    for item in args.option:
        key, _, value = item.partition("=")
        model, _, opt = key.partition(".")
        options[model][opt] = parse_value(value)
    kwargs = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, samples=0)
    results = {m: [] for m in models}
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        for repeat in range(args.repeats):
            for m in (models if repeat % 2 == 0 else models[::-1]):
                r = train_once(m, options[m], kwargs, ds, store)
                results[m].append(r)
                print(f"  repeat {repeat + 1} {m}: test_recon_mel_db {r['recon']:.3f} dB, train {r['wall']:.1f} s wall, "
                      f"{r['cpu']:.1f} CPU-s, {r['params']:,} parameters; load {os.getloadavg()[0]:.1f}", flush=True)
        if args.figure:
            side_by_side(results, ds, args.figure)
            print(f"\nfigure: {args.figure}\n\n| model | " + " | ".join(METRICS) + " |")
            print("| --- |" + " --- |" * len(METRICS))
            for m in models:
                values = all_metrics(results[m][-1], ds)
                print(f"| {m} | " + " | ".join(f"{values[k]:.3f}" for k in METRICS) + " |")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("recon", "wall", "cpu")} for m, rs in results.items()}
    ref = models[0]
    print("\n| model | test_recon_mel_db | train wall s | train CPU-s | recon ratio | wall ratio | CPU ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m in models:
        a, b = med[m], med[ref]
        print(f"| {m} {options[m] or ''} | {a['recon']:.3f} | {a['wall']:.1f} | {a['cpu']:.1f} | "
              f"{a['recon'] / b['recon']:.2f} | {a['wall'] / b['wall']:.2f} | {a['cpu'] / b['cpu']:.2f} |")


if __name__ == "__main__":
    main()
