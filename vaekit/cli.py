"""The ``vaekit`` command line: a thin layer over the Python API.

Heavy imports (TensorFlow, MLflow, librosa) happen inside commands, never at import
time, so ``vaekit --help`` and ``vaekit plugins`` stay fast.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from vaekit import __version__, backend, console
from vaekit.backend import BACKENDS
from vaekit.errors import ConfigError, VaekitError, save_traceback, write_failure
from vaekit.studies import PRUNER_STARTUP, PRUNERS, follow_parent


def friendly_errors(fn):
    """Print user errors as one line and exit non-zero; Ctrl-C → 130, SIGTERM → 143."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vaekit.tracking import RunTerminated

        try:
            return fn(*args, **kwargs)
        except VaekitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except RunTerminated as exc:
            click.echo(f"Stopped: {exc}.", err=True)
            sys.exit(128 + exc.signum)
        except Exception as exc:
            from vaekit.tracking import MLFLOW_TRACEBACKS

            reason = write_failure(exc)
            if reason is None:
                raise  # a bug: its traceback is the report
            saved = save_traceback(exc, MLFLOW_TRACEBACKS)
            click.echo(f"Error: {_write_failure_line(exc, reason)}; traceback in {saved}", err=True)
            sys.exit(1)

    return wrapper


def _write_failure_line(exc: BaseException, reason: str) -> str:
    """What a failure to write did to the run (see :func:`vaekit.tracking.tracked_run`)."""
    unended, ended = getattr(exc, "vaekit_unended", None), getattr(exc, "vaekit_ended", None)
    if unended:
        run_id, why = unended
        return (f"cannot write ({reason}); the tracking store could not be told either ({why}), so run {run_id} "
                "is left RUNNING: free space, then end it (vaekit run --resume continues it)")
    if ended:
        return f"cannot write ({reason}); run {ended[0]} ended {ended[1]}, with nothing half-written kept"
    return f"cannot write ({reason})"


def load_plugin_files(paths) -> None:
    """Load ``--plugin`` files, and pass them on to processes this one starts (via VAEKIT_PLUGINS)."""
    from vaekit.plugins import load_plugin_file

    for path in paths:
        load_plugin_file(path)
    if paths:
        inherited = [p for p in os.environ.get("VAEKIT_PLUGINS", "").split(os.pathsep) if p]
        added = [os.path.abspath(p) for p in paths if os.path.abspath(p) not in inherited]
        os.environ["VAEKIT_PLUGINS"] = os.pathsep.join(inherited + added)


plugin_option = click.option(
    "--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
    help="A one-off plugin file to load (repeatable; VAEKIT_PLUGINS also takes paths).")


#: ``--tracking-uri`` of the commands that read a logged run (``vaekit run`` takes its own from RunConfig).
tracking_uri_option = click.option(
    "--tracking-uri", help="The run's tracking store [MLFLOW_TRACKING_URI, else ./mlflow.db].")


def backend_option(what: str, note: str = ""):
    """``--backend`` of a command without a RunConfig (``vaekit run`` takes its own from RunConfig): Keras
    backend ``what``, then where it comes from when not given (:func:`vaekit.backend.select`), then ``note``."""
    return click.option("--backend", type=click.Choice(list(BACKENDS)),
                        help=f"Keras backend {what} [{backend.ORDER}{note}].")


trust_option = click.option(
    "--trust-run-plugins", "trust_plugins", is_flag=True,
    help="Import the plugin files the run recorded (tag vaekit.plugin_files), printing their paths first. "
         "Only for stores you trust: anyone who can write to a store can set that tag.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vaekit")
def main():
    """vaekit: variational autoencoders on mel spectrograms, as plugins, tracked in MLflow."""
    # Each command that imports a backend or MLflow quiets the console first (vaekit.console).


def setting_options(fn):
    """``vaekit run``'s flags, one per :class:`vaekit.config.RunConfig` field, help and default from the field."""
    from dataclasses import MISSING, fields

    from vaekit.config import RunConfig

    for f in reversed(fields(RunConfig)):
        meta, flag = f.metadata, dict(f.metadata["flag"])
        default = f.default if f.default is not MISSING else None
        shown = meta["shown"] if meta["shown"] is not None else default
        help_text = meta["help"] + ("" if shown is None or shown is False else f" [{shown}]")
        name = "--" + f.name.replace("_", "-")
        if f.name == "options":
            option = click.option("--option", "options", multiple=True, metavar="KIND.KEY=VALUE", help=help_text)
        elif f.name == "components":  # None when not given, as every other flag
            option = click.option("--component", "components", multiple=True, metavar="KIND=NAME", help=help_text,
                                  callback=lambda _ctx, _param, items: items or None)
        elif flag.pop("on_off", False):
            option = click.option(f"{name}/--no-{name[2:]}", default=None, help=help_text)
        elif flag.pop("is_flag", False):
            option = click.option(name, is_flag=True, default=None, help=help_text)
        elif "choices" in flag:
            option = click.option(name, type=click.Choice(list(flag["choices"])), help=help_text)
        elif flag.get("path"):
            option = click.option(name, type=click.Path(), help=help_text)
        else:
            kind = type(default) if default is not None else str
            option = click.option(name, type=kind, metavar=flag.get("metavar", "SECONDS" if f.name == "checkpoint_interval"
                                                                     else None), help=help_text)
        fn = option(fn)
    return fn


def run_options(resume: bool = True):
    """``vaekit run``'s flags, for ``run``, ``sweep`` and ``tune`` alike: :func:`setting_options`, ``--config``,
    ``--plugin``, ``--quiet`` and ``--verbose``; with ``resume``, also ``--resume`` and ``--trust-run-plugins``
    (they continue one run, so they mean nothing in a sweep or a study)."""

    def decorate(fn):
        for option in reversed([
            setting_options,
            click.option("--config", "config_file", type=click.Path(dir_okay=False),
                         help="TOML file with the same settings; flags win."),
            *([click.option("--resume", metavar="RUN_ID",
                            help="Continue a KILLED or FAILED run from its last checkpoint, with its own settings.")]
              if resume else []),
            plugin_option,
            *([trust_option] if resume else []),
            click.option("--quiet", is_flag=True, help="No training progress."),
            click.option("--verbose", is_flag=True,
                         help="Show every library's log lines too (TensorFlow, absl, CUDA, MLflow INFO)."),
        ]):
            fn = option(fn)
        return fn

    return decorate


@main.command()
@run_options()
@friendly_errors
def run(config_file, options, plugin_files, trust_plugins, quiet, verbose, resume, **flags):
    """Train a VAE, evaluate it, generate sounds, and log everything to MLflow."""
    follow_parent()  # a trial of `vaekit tune` (or a sweep's run) stops when its tune process is gone
    console.configure(verbose)
    from vaekit.config import build_config

    if resume:
        from vaekit.checkpoint import resume_config

        given = sorted(k for k, v in flags.items() if v is not None and k != "tracking_uri")
        if given or options or config_file:
            names = [f"--{k.replace('_', '-')}" for k in given] + ["--option"] * bool(options) + ["--config"] * bool(config_file)
            raise ConfigError(f"--resume continues a run with its own settings; drop {', '.join(names)}")
        load_plugin_files(plugin_files)
        config = resume_config(resume, flags["tracking_uri"], trust_plugins, echo=lambda line: click.echo(line, err=True))
    else:
        config = build_config(config_file, options, **flags)
        # Before any plugin file is imported: one may import Keras, which reads the backend once.
        config = config.with_backend()
        load_plugin_files(plugin_files)
    from vaekit.commands.run import run as run_api
    from vaekit.tracking import ui_command

    result = run_api(config, progress=not quiet, resume=resume, echo=lambda line: click.echo(line, err=True))
    m = result.metrics
    click.echo(f"run id:    {result.run_id}")
    click.echo(f"test MSE:  {m['test_mse']:.4f}" if "test_mse" in m else "")
    click.echo(f"test KL:   {m['test_kl']:.4f}" if "test_kl" in m else "")
    click.echo(f"test loss: {m['test_loss']:.4f}")
    audio = [f"{k} {v:.3f}" for k, v in m.items() if k.startswith(("test_recon", "test_vocoded", "test_audio", "sample_"))]
    if audio:
        click.echo(f"metrics:   {', '.join(audio)}")
    from vaekit.runlog import skipped_lines

    for line in skipped_lines(result.skipped):
        click.echo(f"skipped:   {line}")
    if m.get("stopped_epoch"):
        click.echo(f"stopped:   after epoch {m['stopped_epoch']:.0f}; kept epoch {m['best_epoch']:.0f}'s weights")
    if result.samples:
        where = result.artifact_uri
        if where.startswith("file:"):  # a local store's artifacts: show the folder
            from urllib.parse import urlparse
            from urllib.request import url2pathname

            where = url2pathname(urlparse(where).path)
        click.echo(f"samples:   {where.rstrip('/')}/samples/")
    click.echo(f"MLflow UI: {ui_command(result.tracking_uri)}")


@main.command()
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="Values to sweep: a component option (loss.lambda=100,500) or a setting (latent_dim=8,20); repeatable.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs at a time, each in its own process.")
@run_options(resume=False)
@friendly_errors
def sweep(grid, jobs, config_file, options, plugin_files, quiet, verbose, **flags):
    """Run every combination of --grid values as child runs of one parent run (takes run's flags too).

    Prints a table of the children's test metrics; exits 1 if any child failed.
    """
    console.configure(verbose)  # children inherit the environment it sets; --verbose is passed on to them
    from vaekit.config import build_config

    load_plugin_files(plugin_files)
    config = build_config(config_file, options, **flags)
    from vaekit.commands.sweep import sweep as sweep_api

    echo = (lambda *a: None) if quiet else click.echo
    try:
        result = sweep_api(config, grid, jobs=jobs, plugin_files=plugin_files, echo=echo, verbose=verbose)
    except VaekitError as exc:
        if getattr(exc, "table", None):  # every child failed: their table, then the one-line error
            click.echo(exc.table)
        raise
    click.echo(result.table)
    click.echo(f"parent run: {result.parent_run_id}")
    if result.failed:
        click.echo(f"Error: {len(result.failed)} of {len(result.children)} runs failed", err=True)
        sys.exit(1)


@main.command()
@click.option("--space", "space_file", required=True, type=click.Path(dir_okay=False),
              help='TOML file of what varies: "loss.lambda" = {low = 100, high = 5000, log = true}, latent_dim = [8, 16, 32].')
@click.option("--trials", "n_trials", type=int, required=True, help="Trials the study should hold in all (a rerun continues).")
@click.option("--study", "study_name", metavar="NAME", help="Study name [the space file's name without .toml].")
@click.option("--storage", metavar="FILE_OR_URL",
              help="Optuna journal file, or a database URL (postgresql://..., sqlite:///...) "
                   "[optuna.journal beside the tracking store].")
@click.option("--jobs", type=int, default=1, show_default=True, help="Trials at a time, each in its own process.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True,
              help="How trials are chosen.")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="How trials are stopped early on their per-epoch validation metric.")
@click.option("--pruner-startup", type=int, default=PRUNER_STARTUP, show_default=True,
              help="Trials that must complete before the median pruner stops any.")
@click.option("--metric", default="test_mse", show_default=True, help="The run metric to optimize.")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default="minimize", show_default=True,
              help="Whether --metric is better low or high.")
@run_options(resume=False)
@friendly_errors
def tune(space_file, n_trials, study_name, storage, jobs, sampler, pruner, pruner_startup, metric, direction,
         config_file, options, plugin_files, quiet, verbose, **flags):
    """Search settings and options with Optuna: trials are child runs of one parent run per study (takes run's flags
    for what the space does not vary).

    Trials that fall behind are pruned after an epoch; the study is kept in --storage, so running the command again
    (or on another machine, with a database URL) continues it.  Prints a table of all trials and the best.
    """
    console.configure(verbose)  # trials inherit the environment it sets; --verbose is passed on to them
    from vaekit.config import build_config

    load_plugin_files(plugin_files)
    config = build_config(config_file, options, **flags)
    from vaekit.commands.tune import StudySettings
    from vaekit.commands.tune import tune as tune_api

    settings = StudySettings(space_file, n_trials, name=study_name, storage=storage, jobs=jobs, sampler=sampler,
                             pruner=pruner, pruner_startup=pruner_startup, metric=metric, direction=direction)
    echo = (lambda *a: None) if quiet else click.echo
    try:
        result = tune_api(config, settings, plugin_files=plugin_files, echo=echo, verbose=verbose)
    except VaekitError as exc:
        if getattr(exc, "table", None):  # every trial failed: the table, then the one-line error
            click.echo(exc.table)
        raise
    click.echo(result.table)
    if result.best:
        b = result.best
        click.echo(f"best trial: {b['number']} ({metric} {b['value']:.4g}), run {b['run_id']}")
    click.echo(f"parent run: {result.parent_run_id}")


@main.command()
@click.argument("audio_dir", type=click.Path())
@click.argument("out_dir", type=click.Path())
@click.option("--split-by", type=click.Choice(["random", "speaker"]), default="random", show_default=True,
              help="random: clips at random; speaker: each parent folder (speaker) on one side only.")
@click.option("--test-fraction", type=float, default=0.25, show_default=True, help="Share of clips in x_test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--sr", type=int, help="Sample rate clips are resampled to [22050].")
@click.option("--duration", type=float, help="Seconds a clip is padded or trimmed to [1.0].")
@click.option("--n-mels", type=int, help="Mel bands (spectrogram height) [50].")
@click.option("--n-fft", type=int, help="FFT size [2048].")
@click.option("--hop-length", type=int, help="Hop in samples [int((samples + 1) / 50) + 1: 50 frames; 442 at 22050 Hz, 1 s].")
@click.option("--workers", type=int, default=0, help="Worker processes [0: one per CPU core].")
@click.option("--label", "labels", multiple=True, metavar="NAME=SOURCE",
              help="A label of every clip, for --condition NAME: SOURCE folder (the file's parent folder) or field:K "
                   "(the K-th _-separated field of the file name, from 0), e.g. digit=field:0 (repeatable).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it already holds a dataset.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def prepare(audio_dir, out_dir, split_by, test_fraction, seed, sr, duration, n_mels, n_fft, hop_length, workers,
            labels, force, quiet):
    """Turn a folder tree of audio (wav, flac, ogg) into notebook-format data in OUT_DIR."""
    from vaekit.prepare import audio_params, prepare_folder

    audio = audio_params(sr=sr, duration=duration, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length)
    s = prepare_folder(audio_dir, out_dir, audio, split_by=split_by, test_fraction=test_fraction, seed=seed,
                       workers=workers, force=force, progress=not quiet, labels=labels)
    click.echo(f"prepared {s.train + s.test} clips ({s.shape[0]}×{s.shape[1]}) from {s.files} files in "
               f"{s.seconds:.1f} s ({s.files_per_s:.0f} files/s): {s.train} train, {s.test} test → {s.out_dir}")
    if s.labels:
        click.echo("labels:   " + ", ".join(f"{name} ({k} classes)" for name, k in s.labels.items()))
    if s.skipped:
        click.echo(f"skipped {len(s.skipped)} file(s) (listed in {s.out_dir}/dataset.json):")
        for item in s.skipped[:20]:
            click.echo(f"  {item['file']}: {item['reason']}")
        if len(s.skipped) > 20:
            click.echo(f"  … and {len(s.skipped) - 20} more")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: {kind: [{name, plugin, version, options, ranges, "
                   "description}]} (ranges: {option: {min, max, above, below, finite, choices}}, the keys declared).")
@plugin_option
@friendly_errors
def plugins(as_json, plugin_files):
    """List every registered component by kind, with its plugin and options.

    Plugins come from vaekit's built-ins, installed packages (entry point group
    "vaekit"), VAEKIT_PLUGINS and --plugin files; nothing else is imported.
    """
    import json as json_module

    from vaekit import kinds
    from vaekit.components import all_components

    console.configure()  # a plugin file may import a backend
    load_plugin_files(plugin_files)
    listing = {
        kind: [
            {"name": c.name, "plugin": c.plugin, "version": c.plugin_version, "options": c.options,
             "ranges": {key: r.to_dict() for key, r in c.option_ranges.items()}, "description": c.description,
             "_ranges_text": "; ".join(c.describe_range(key) for key in c.option_ranges)}
            for c in all_components(kind).values()
        ]
        for kind in kinds.names()
    }
    texts = {(kind, c["name"]): c.pop("_ranges_text") for kind, comps in listing.items() for c in comps}
    if as_json:
        click.echo(json_module.dumps(listing, indent=2, default=repr))
        return
    for kind, comps in listing.items():
        click.echo(f"{kinds.get(kind).plural}:")
        for c in comps:
            opts = ", ".join(f"{k}={v!r}" for k, v in c["options"].items()) or "no options"
            click.echo(f"  {c['name']:<14} {c['plugin']} {c['version']}")
            if c["description"]:
                click.echo(f"  {'':<14} {c['description']}")
            click.echo(f"  {'':<14} options: {opts}")
            if texts[(kind, c["name"])]:
                click.echo(f"  {'':<14} ranges: {texts[(kind, c['name'])]}")


def _listen_options(fn):
    """Options shared by generate, interpolate and reconstruct."""
    for deco in reversed([
        click.option("--vocoder", "vocoders", multiple=True, metavar="NAME",
                     help="Vocoder to use (repeatable: each one's audio for the same z) [the run's]."),
        click.option("--option", "options", multiple=True, metavar="vocoder.KEY=VALUE",
                     help="A vocoder option, e.g. vocoder.n_iter=64 (repeatable)."),
        tracking_uri_option,
        backend_option("to load the model with (any: a model loads on every backend)"),
        plugin_option,
        trust_option,
    ]):
        fn = deco(fn)
    return fn


def _listen_setup(backend_name, plugin_files) -> str:
    """Quiet the console and choose the backend (before a plugin file could import Keras), then load ``--plugin`` files;
    the backend's name."""
    console.configure()
    chosen = backend.select(backend_name)
    load_plugin_files(plugin_files)
    return chosen


def _report(result) -> None:
    for key, value in sorted(result.metrics.items()):
        click.echo(f"{key}: {value:.2f}")
    if result.files:
        click.echo(f"wrote {len(result.files)} files, e.g. {result.files[0]}")
    if result.artifacts:
        import posixpath

        where = posixpath.commonpath(result.artifacts) if len(result.artifacts) > 1 else result.artifacts[0]
        click.echo(f"logged {len(result.artifacts)} artifacts to the run under {where}/")


@main.command()
@click.argument("run_id", metavar="RUN_OR_URI")
@click.option("-n", "n", type=int, default=8, show_default=True, help="Sounds to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for z ~ N(0, I).")
@click.option("--label", metavar="CLASS", help="A conditional run: the class every sound is drawn with, e.g. seven "
                                              "[sample i: class i mod K].")
@click.option("--out", type=click.Path(file_okay=False), help="Also write WAVs and PNGs to this directory.")
@click.option("--log/--no-log", default=True, show_default=True, help="Log them back to the run under generated/.")
@_listen_options
@friendly_errors
def generate(run_id, n, seed, label, out, log, vocoders, options, tracking_uri, backend, plugin_files, trust_plugins):
    """Generate sounds from a logged run: z ~ N(0, I) → decoder → vocoder(s).

    RUN_OR_URI is a run id, models:/NAME/VERSION or models:/NAME@ALIAS (a registered model: its run).
    """
    _listen_setup(backend, plugin_files)
    from vaekit.commands.generate import generate as generate_api

    _report(generate_api(run_id, n=n, vocoders=vocoders, options=options, seed=seed, out=out, log=log,
                         tracking_uri=tracking_uri, trust_plugins=trust_plugins, label=label))


@main.command()
@click.argument("run_id", metavar="RUN_OR_URI")
@click.option("--clips", type=int, nargs=2, metavar="A B", help="Walk between test clips A and B (needs the run's data).")
@click.option("--seeds", type=int, nargs=2, metavar="A B", help="Walk between the z of seeds A and B [0 1 unless --clips].")
@click.option("--label", "labels", type=str, nargs=2, metavar="A B",
              help="A conditional run: walk the label from class A to class B too; alone, at the fixed z of seed 0.")
@click.option("--steps", type=int, default=8, show_default=True, help="Points on the walk, ends included (2 to 64).")
@click.option("--data", type=click.Path(), help="The run's data, if it moved [the run's --data].")
@click.option("--out", type=click.Path(file_okay=False), help="Also write WAVs and the PNG strip here.")
@click.option("--log/--no-log", default=True, show_default=True, help="Log them back to the run under generated/.")
@_listen_options
@friendly_errors
def interpolate(run_id, clips, seeds, labels, steps, data, out, log, vocoders, options, tracking_uri, backend,
                plugin_files, trust_plugins):
    """A latent walk between two test clips or two seeds, as WAVs and one PNG strip; with --label, between two labels.

    RUN_OR_URI is a run id, models:/NAME/VERSION or models:/NAME@ALIAS (a registered model: its run).
    """
    _listen_setup(backend, plugin_files)
    from vaekit.commands.generate import interpolate as interpolate_api

    if not clips and not seeds:
        seeds = (0, 0) if labels else (0, 1)
    _report(interpolate_api(run_id, clips=clips or None, seeds=seeds or None, steps=steps, vocoders=vocoders,
                            options=options, data=data, out=out, log=log, tracking_uri=tracking_uri,
                            trust_plugins=trust_plugins, labels=labels or None))


@main.command()
@click.argument("run_id", metavar="RUN_OR_URI")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="FILE_OR_DIR...")
@click.option("--out", type=click.Path(file_okay=False),
              help="Write here (folder structure kept) instead of beside the original; needed for folders and several files.")
@click.option("--log/--no-log", default=False, show_default=True, help="Also log to the run under generated/.")
@click.option("--label", metavar="CLASS", help="A conditional run: the class of the inputs (required there).")
@_listen_options
@friendly_errors
def reconstruct(run_id, inputs, out, log, label, vocoders, options, tracking_uri, backend, plugin_files, trust_plugins):
    """Encode and decode real clips (files, or folders searched recursively): STEM.reconstructed.wav each, a figure
    per 16, and the metrics over all of them.

    RUN_OR_URI is a run id, models:/NAME/VERSION or models:/NAME@ALIAS (a registered model: its run).
    """
    _listen_setup(backend, plugin_files)
    from vaekit.commands.generate import reconstruct as reconstruct_api

    result = reconstruct_api(run_id, inputs[0] if len(inputs) == 1 and not os.path.isdir(inputs[0]) else list(inputs),
                             vocoders=vocoders, options=options, out=out, log=log, tracking_uri=tracking_uri,
                             trust_plugins=trust_plugins, label=label)
    _report(result)
    _list_skipped(result.skipped)


def _list_skipped(skipped: list[dict]) -> None:
    """As `vaekit prepare` lists them: the first 20, then how many more."""
    if skipped:
        click.echo(f"skipped {len(skipped)} file(s):")
        for item in skipped[:20]:
            click.echo(f"  {item['file']}: {item['reason']}")
        if len(skipped) > 20:
            click.echo(f"  … and {len(skipped) - 20} more")


@main.command()
@click.argument("run_id", metavar="RUN_OR_URI")
@click.argument("name")
@click.option("--alias", help="Also point this alias (e.g. champion) at both new versions.")
@tracking_uri_option
@friendly_errors
def register(run_id, name, alias, tracking_uri):
    """Register a finished run's VAE as NAME and its generator as NAME-generator in the model registry.

    Prints the new versions' URIs (models:/NAME/VERSION), which generate, interpolate, reconstruct,
    export and `mlflow models serve` take.
    """
    from vaekit.logged import find_run
    from vaekit.registry import register as register_api

    client, run = find_run(run_id, tracking_uri)
    versions = register_api(client, run.info.run_id, name, alias)
    for what, version in (("VAE", versions["vae"]), ("generator", versions["generator"])):
        if version is None:
            click.echo(f"generator: none (run {run.info.run_id} was logged before vaekit logged generators)")
            continue
        uri = f"models:/{version.name}/{version.version}"
        click.echo(f"{what + ':':<10} {uri}" + (f"  (models:/{version.name}@{alias})" if alias else ""))


def logged_run_options(backend_what: str, backend_note: str = ""):
    """export's and explore's options for opening a logged run: --tracking-uri, --backend (its help from
    :func:`backend_option`'s ``what`` and ``note``), --plugin and --trust-run-plugins."""
    options = [tracking_uri_option, backend_option(backend_what, backend_note), plugin_option, trust_option]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command()
@click.argument("run_id", metavar="RUN_OR_URI")
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["onnx", "saved_model"]), default="onnx", show_default=True,
              help="onnx: decoder.onnx and encoder.onnx (needs tf2onnx and onnx: pip install 'vaekit[export]'); "
                   "saved_model: TensorFlow SavedModel folders decoder/ and encoder/.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (once the new export is complete).")
@logged_run_options("to export with", "; tensorflow is the tested one")
@friendly_errors
def export(run_id, out, fmt, force, tracking_uri, backend, plugin_files, trust_plugins):
    """Write a run's decoder and encoder for use outside vaekit, with what turns their output into sound.

    OUT gets decoder (z → mel in [0, 1]) and encoder (mel → z_mean, z_log_var), audio.json,
    min_values.npy, max_values.npy (dB = x · (max − min) + min) and a README.txt.
    RUN_OR_URI is a run id, models:/NAME/VERSION or models:/NAME@ALIAS.
    """
    chosen = _listen_setup(backend, plugin_files)
    from vaekit.commands.export import export as export_api

    files = export_api(run_id, out, fmt, tracking_uri=tracking_uri, force=force, trust_plugins=trust_plugins,
                       backend=chosen)
    total = sum(f.stat().st_size for f in files)
    click.echo(f"wrote {len(files)} files ({total / 1e6:.1f} MB) to {out}; {out}/README.txt says how to use them")


@main.group()
def runs():
    """Manage runs in a store: close one left RUNNING by a process that was killed."""


@runs.command("close")
@click.argument("run_id")
@tracking_uri_option
@click.option("--force", is_flag=True,
              help="Close it although vaekit cannot tell its process is gone (another host, no owner tags).")
@friendly_errors
def close(run_id, tracking_uri, force):
    """Mark RUN_ID KILLED if its process is gone (SIGKILL, OOM killer, power cut); --resume still takes it."""
    from vaekit import tracking

    client, run = tracking.get_run(run_id, tracking_uri, what=f"run {run_id}")
    click.echo(tracking.close(client, run, force=force))


@main.command()
@click.argument("store", required=False)
@click.option("--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but 127.0.0.1 exposes the store to the network.")
@friendly_errors
def ui(store, port, host):
    """Open the MLflow UI on a store (default ./mlflow.db; a directory, a .db file or a URI), WAVs playable."""
    from vaekit.commands.ui import serve

    sys.exit(serve(store, port=port, host=host))


@main.command()
@click.argument("run_id")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; anything but 127.0.0.1 exposes the run's model and data to the network.")
@click.option("--data", type=click.Path(), help="The run's data, if it moved [the run's --data].")
@click.option("--vocoder", metavar="NAME", help="Vocoder for every sound [the run's, with its options].")
@click.option("--option", "options", multiple=True, metavar="vocoder.KEY=VALUE",
              help="A vocoder option, e.g. vocoder.n_iter=16 (repeatable).")
@logged_run_options("to load the model with")
@friendly_errors
def explore(run_id, port, host, data, vocoder, options, tracking_uri, backend, plugin_files, trust_plugins):
    """See and hear a run's latent space in the browser: a map of the test set, sliders, interpolation.

    RUN_ID is a run id or a models:/ URI of its model.  Prints the page's URL; Ctrl-C or SIGTERM stops
    it.  The JSON API under the page is in docs/explore.md.
    """
    _listen_setup(backend, plugin_files)
    from vaekit.commands.explore import serve

    try:
        serve(run_id, port=port, host=host, data=data, vocoder=vocoder, options=options, tracking_uri=tracking_uri,
              trust_plugins=trust_plugins, echo=click.echo)
        code = 0  # stopped by a signal that uvicorn did not raise again (SIGTERM is raised again: exit 143)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    # The server has stopped and nothing is left to write (a kept sound is logged within its request); the
    # interpreter's own teardown of TensorFlow would only hold the terminal longer (docs/benchmarks.md).
    sys.stdout.flush()
    console.drain()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
