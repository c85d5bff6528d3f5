"""``vaekit run`` as a Python function: resolve → load data → check store → build → fit → evaluate → sample → log.

:func:`run` checks everything it can before an MLflow run starts (components, options, data,
model shapes, the tracking store), so bad input never leaves a run behind.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from vaekit import audio_metrics, backend, checkpoint, components, distribute, runlog, studies, tracking
from vaekit.config import RunConfig


@dataclass
class RunResult:
    """What a finished run produced."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    artifact_uri: str
    metrics: dict[str, float]
    samples: list[str] = field(default_factory=list)
    #: Metrics that logged nothing on this data, and why (e.g. the test_audio_* ones on spectrograms without audio).
    skipped: dict[str, str] = field(default_factory=dict)


def run(config: RunConfig, progress: bool = True, resume: str | None = None, echo=lambda line: None) -> RunResult:
    """Train, evaluate, sample, vocode and log one run; return where it went.

    Raises :class:`vaekit.errors.VaekitError` subclasses for input the user can fix; these are
    raised before the MLflow run starts whenever they can be detected then.  With ``resume`` (a
    KILLED or FAILED run's id, ``config`` from :func:`vaekit.checkpoint.resume_config`) training
    continues in that run from its last checkpoint; ``echo`` gets a line saying from which epoch.
    """
    config = config.validate().with_backend()  # config.backend: the one name everything below reads
    if config.data and Path(config.data).exists():
        # Absolute, so config.toml (and --resume from another directory) finds the data again.
        config = replace(config, data=str(Path(config.data).resolve()))
    comps = components.resolve(config)
    ds = components.load_dataset(config, comps)
    # The store before the backend starts: a store that cannot be used costs no model building or training.
    uri, experiment_id = _check_store(config)
    if config.deterministic:
        backend.make_deterministic(config.backend)

    from vaekit import training  # imports Keras: the backend was selected above

    placement = distribute.make_placement(config.strategy, config.backend)  # first: collectives need it so
    model, _ = training.build(config, comps, ds, placement)
    vocoder_fn = comps["vocoder"].create(ds.audio, **config.option("vocoder"))
    waves = components.check_vocoder(comps["vocoder"], vocoder_fn, ds, config.option("vocoder"))
    own = runlog.own_metrics(model.terms.names)  # names a metric plugin must not take over
    audio_metrics.check(comps["metrics"], ds, config.option("metrics"), waves, config.condition, own)
    ckpt = _restore(resume, uri, model, config, echo) if resume else None

    # Training keeps the last completed epoch in memory; a stop anywhere in the run (Ctrl-C, SIGTERM,
    # an exception) writes it before tracked_run ends the run KILLED or FAILED, so --resume has it.
    checkpointer = checkpoint.Checkpointer(model, config.checkpoint_interval)
    with tracking.tracked_run(experiment_id, run_name=runlog.run_name(config, comps),
                              tags=runlog.run_tags(comps, config.backend), run_id=resume,
                              system_metrics=config.system_metrics) as active, \
            checkpointer.kept_on_stop():
        logged = None
        if ckpt:
            logged = checkpoint.mark_resumed(resume, ckpt)
        else:
            runlog.log_start(config, comps, ds, placement, backend.version(config.backend))
        context = audio_metrics.context_for(ds)  # the test clips' original audio, where the data knows it
        # callbacks: a `vaekit tune` trial's pruning (none for a plain run); --audio-every's listening
        callbacks = studies.callbacks() + runlog.epoch_audio(model, ds, comps["vocoder"], vocoder_fn, config, context.reference_audio)
        metrics = training.fit(model, ds, config, progress, initial_epoch=ckpt.epoch if ckpt else 0, checkpointer=checkpointer,
                               callbacks=callbacks, shard=placement.shard, logged=logged, early_state=ckpt.early_stop if ckpt else None)
        metrics.update(training.evaluate(model, ds, config))
        metrics.update(audio_metrics.evaluate(model, ds, comps, vocoder_fn, config, context, own))
        runlog.log_results(metrics, context.skipped)
        samples = runlog.log_samples(model, ds, comps["vocoder"], vocoder_fn, config)
        runlog.log_extras(model, ds, config)  # denormalisation arrays and figures, for generate and the UI
        runlog.log_model(model, ds, config)
        runlog.log_generator(model, ds, config)  # the servable z → WAV model, beside the VAE
        result = RunResult(active.info.run_id, experiment_id, uri, active.info.artifact_uri, metrics, samples, context.skipped)
    checkpoint.discard(result.artifact_uri)  # FINISHED runs are not resumed: no checkpoint per run left behind
    return result


def _restore(resume: str, uri: str, model, config: RunConfig, echo):
    """Load run ``resume``'s last checkpoint into ``model`` and say from which epoch it goes on; the checkpoint."""
    from mlflow.tracking import MlflowClient

    ckpt = checkpoint.load(resume, uri, config.checkpoint_interval)
    checkpoint.restore(model, ckpt)
    echo(checkpoint.describe(ckpt, checkpoint.logged_epochs(MlflowClient(uri), resume)))
    return ckpt


def _check_store(config: RunConfig) -> tuple[str, str]:
    """The store's URI and the experiment's id, checked writable; a scratch store for non-chief workers.

    Only the chief of a multi-worker run logs to the store; the others log (store and artifacts
    alike) into a scratch folder removed when the process exits.
    """
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    if not distribute.is_chief(config.strategy, config.backend):
        import atexit
        import shutil

        scratch = Path(tempfile.mkdtemp(prefix="vaekit-worker-"))
        atexit.register(shutil.rmtree, scratch, True)
        uri = f"sqlite:///{scratch}/mlflow.db"  # its artifacts go beside it, like any sqlite store's
    return uri, tracking.check_store(uri, config.experiment)
