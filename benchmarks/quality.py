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

Recipes side by side (issue 21): ``--recipes notebook,hifi`` trains whole recipes instead — ``notebook`` is
vaekit's defaults (the notebook's), any other name a file of ``recipes/`` (or a path), each as ``vaekit run
--config`` reads it, with ``:SETTING=VALUE`` overrides (``hifi:discriminator=patch``); ``--option`` applies
to every arm (e.g. ``dataset.split_by=speaker``).  Each arm loads its own data (its resolution) from the
same source (``--data``: a folder of audio, or nothing for the synthetic voices).  Per arm it prints the
audio-reference metrics on ``--clips`` test clips spread over the test set (vocoded reconstructions against
the original audio: ``test_audio_mel_db``, ``test_audio_stft_db``; see docs/metrics.md), ``sample_fd``,
``test_recon_mel_db`` (in the arm's own mel space), training CPU-seconds of this process and wall seconds,
the load average, and the ratios to the first arm.  Arms take turns (reversed every other repeat).

    python benchmarks/quality.py --recipes notebook,hifi                          # synthetic voices
    python benchmarks/quality.py --recipes notebook,hifi --data DIGITS --option dataset.split_by=speaker
    python benchmarks/quality.py --recipes notebook,hifi,hifi:discriminator=patch --figure recipes.png
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
    config = RunConfig(encoder=name, decoder=name, tracking_uri=store, options=opts, **config_kwargs).with_backend()
    comps = components.resolve(config)
    placement = distribute.make_placement(None, config.backend)
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


ROOT = Path(__file__).resolve().parent.parent


def recipe_config(spec: str, data: str | None, options: tuple, store: str):
    """The settings of one arm, ``RECIPE[:SETTING=VALUE...]``: ``notebook`` (the defaults) or a recipe file, as
    ``vaekit run --config FILE --data DATA --option ...`` builds them; ``none`` sets a setting to None."""
    from dataclasses import replace

    from vaekit.config import build_config, parse_value

    name, *overrides = spec.split(":")
    path = None if name == "notebook" else Path(name) if name.endswith(".toml") else ROOT / "recipes" / f"{name}.toml"
    values = {}
    for item in overrides:
        key, _, value = item.partition("=")
        values[key.strip().replace("-", "_")] = parse_value(value.strip())
    config = build_config(path, options, data=data, tracking_uri=store, samples=0,
                          **{k: v for k, v in values.items() if v != "none"})
    return replace(config, **{k: None for k, v in values.items() if v == "none"}).validate()


def train_recipe(config) -> dict:
    """Build and train one arm as ``vaekit run`` does (into the config's throw-away store); its training CPU-seconds."""
    import mlflow

    from vaekit import components, distribute, training

    config = config.with_backend()
    comps = components.resolve(config)
    ds = components.load_dataset(config, comps)
    model, _ = training.build(config, comps, ds, distribute.make_placement(None, config.backend))
    mlflow.set_tracking_uri(config.tracking_uri)
    with mlflow.start_run():
        cpu = time.process_time()
        fit = training.fit(model, ds, config, progress=False)
        cpu = time.process_time() - cpu
    return {"model": model, "comps": comps, "config": config, "ds": ds, "cpu": cpu, "wall": fit["train_seconds"],
            "params": model.count_params(), "load": os.getloadavg()[0]}


def spread(n: int, k: int):
    """``k`` test rows spread evenly over ``n`` (prepared test sets are ordered by speaker and word)."""
    import numpy as np

    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def recipe_metrics(r: dict, clips: int) -> dict:
    """The audio-reference metrics on ``clips`` spread test clips (their vocoded reconstructions against the
    original audio, per clip too), ``sample_fd`` and ``test_recon_mel_db`` as a run computes them."""
    import numpy as np

    from vaekit import audio_metrics, components

    ds, comps, config, model = r["ds"], r["comps"], r["config"], r["model"]
    vocoder_fn = comps["vocoder"].create(ds.audio, **config.option("vocoder"))
    rows = spread(len(ds.x_test), clips)
    recon = ds.denormalize(audio_metrics.reconstructions(model, ds.x_test[rows]))
    waves = components.vocode(comps["vocoder"], vocoder_fn, recon.astype(np.float32))
    original = np.asarray(audio_metrics.context_for(ds).require_reference().load(list(rows)), np.float32)
    sr = ds.audio.sr
    out = {"rows": rows, "original": original, "vocoded": waves, "sr": sr,
           "test_audio_mel_db": audio_metrics.audio_mel_db(original, waves, sr),
           "test_audio_stft_db": audio_metrics.audio_stft_db(original, waves, sr),
           "per_clip": [audio_metrics.audio_mel_db(original[i:i + 1], waves[i:i + 1], sr) for i in range(len(rows))]}
    some = {**comps, "metrics": components.select_metrics("sample_fd,test_recon_mel_db")}
    out.update(audio_metrics.evaluate(model, ds, some, vocoder_fn, config))
    return out


def recipes_figure(arms: dict, path: str, n: int = 6) -> None:
    """Rows: the original audio of ``n`` spread test clips, then each arm's vocoded reconstructions, all as log-mel
    spectrograms at the reference analysis (80 mels, n_fft 1024, hop 256 at 22050 Hz), each titled with its clip's
    test_audio_mel_db (the arm's name labels its row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vaekit import audio_metrics
    from vaekit.figures import _mel_axes

    def ref_db(waves, sr):
        return audio_metrics.reference_log_mel(audio_metrics.to_reference_rate(waves, sr))

    first = next(iter(arms.values()))
    pick = spread(len(first["original"]), n)
    n = len(pick)
    originals = ref_db(first["original"][pick], first["sr"])
    vmax = float(originals.max())
    rows = [("original audio", originals, None)]
    rows += [(name, ref_db(m["vocoded"][pick], m["sr"]), [m["per_clip"][i] for i in pick]) for name, m in arms.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 1.0, 1.8 * len(rows) + 0.4), dpi=100, squeeze=False)
    for row, (name, mels, errors) in enumerate(rows):
        for i in range(n):
            im = _mel_axes(axes[row, i], mels[i], audio_metrics.REFERENCE, vmax - 80, vmax,
                           "original" if errors is None else f"{errors[i]:.2f} dB", labels=False)
        axes[row, 0].set_ylabel(f"{name}\nmel bin", fontsize=7)
    fig.tight_layout()
    fig.colorbar(im, ax=axes.ravel().tolist(), label="dB", shrink=0.8)
    fig.savefig(path)
    plt.close(fig)


def compare_recipes(args) -> None:
    """``--recipes``: train the arms in turns, print their metrics and training CPU-seconds side by side."""
    from vaekit import backend

    backend.select(None)
    arms = args.recipes.split(",")
    results = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        configs = {a: recipe_config(a, args.data, tuple(args.option), store) for a in arms}
        print(f"data: {args.data or 'synthetic voices'}; {args.repeats} repeat(s), arms in turns; "
              f"{args.clips} test clips for the audio metrics; load {os.getloadavg()[0]:.1f}", flush=True)
        for repeat in range(args.repeats):
            for a in (arms if repeat % 2 == 0 else arms[::-1]):
                r = train_recipe(configs[a])
                r.update(recipe_metrics(r, args.clips))
                results[a].append(r)
                print(f"  repeat {repeat + 1} {a}: {r['ds'].shape[0]}×{r['ds'].shape[1]}, test_audio_mel_db "
                      f"{r['test_audio_mel_db']:.3f} dB, test_audio_stft_db {r['test_audio_stft_db']:.3f} dB, "
                      f"train {r['cpu']:.1f} CPU-s ({r['wall']:.1f} s wall), {r['params']:,} parameters; "
                      f"load {r['load']:.1f}", flush=True)
                r.pop("model")  # the figure needs the audio only
        if args.figure:
            recipes_figure({a: rs[-1] for a, rs in results.items()}, args.figure)
            print(f"\nfigure: {args.figure}")
    keys = ("test_audio_mel_db", "test_audio_stft_db", "sample_fd", "test_recon_mel_db", "cpu", "wall")
    med = {a: {k: statistics.median(r[k] for r in rs) for k in keys} for a, rs in results.items()}
    ref = med[arms[0]]
    print("\n| recipe | H×W | test_audio_mel_db | test_audio_stft_db | sample_fd | test_recon_mel_db (own mel space) "
          "| train CPU-s | train wall s | audio_mel ratio | CPU ratio | load |")
    print("| --- |" + " --- |" * 10)
    for a in arms:
        m, last = med[a], results[a][-1]
        loads = "–".join(f"{r['load']:.1f}" for r in results[a])
        print(f"| {a} | {last['ds'].shape[0]}×{last['ds'].shape[1]} | {m['test_audio_mel_db']:.3f} | "
              f"{m['test_audio_stft_db']:.3f} | {m['sample_fd']:.0f} | {m['test_recon_mel_db']:.3f} | {m['cpu']:.1f} | "
              f"{m['wall']:.1f} | {m['test_audio_mel_db'] / ref['test_audio_mel_db']:.2f} | {m['cpu'] / ref['cpu']:.2f} | "
              f"{loads} |")


METRICS = ("test_recon_mel_db", "test_recon_mcd_db", "test_vocoded_mel_db", "sample_fd", "sample_diversity")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a dataset vaekit run takes [the default: synthetic voices]")
    parser.add_argument("--models", default="conv2,resconv", help="comma-separated encoder=decoder names")
    parser.add_argument("--option", action="append", default=[], metavar="MODEL.KEY=VALUE",
                        help="an option of one model's encoder and decoder, e.g. resconv.filters=24; with "
                        "--recipes a component option of every arm, KIND.KEY=VALUE (e.g. dataset.split_by=speaker)")
    parser.add_argument("--epochs", type=int, default=10, help="(--models; a recipe has its own)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", metavar="PNG", help="also draw test clips and each model's reconstructions "
                        "(the last repeat's) side by side, and print every built-in metric of each model")
    parser.add_argument("--recipes", metavar="ARM,...", help="compare whole recipes instead of models: notebook (the "
                        "defaults), a recipes/ name or a path, each with :SETTING=VALUE overrides (see above)")
    parser.add_argument("--clips", type=int, default=64, help="with --recipes: test clips the audio metrics vocode")
    args = parser.parse_args(argv)
    if args.recipes:
        compare_recipes(args)
        return

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
