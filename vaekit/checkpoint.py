"""Checkpoints kept in the run's own MLflow artifacts, and resuming from them.

A run's state after its last completed epoch is taken in memory after every epoch and written
into the run's artifacts, so a run can be resumed from its MLflow store alone.  They are deleted
once the run is FINISHED (:func:`discard`): only KILLED and FAILED runs are resumed.

When it is written (:class:`Checkpointer`): at most every ``checkpoint_interval`` seconds of
training (``--checkpoint-interval``; 0 = after every epoch), and always when a run stops early
(Ctrl-C, SIGTERM, an exception): then the last completed epoch is written before the run ends.
Only a stop nothing can catch (SIGKILL, the OOM killer, a power cut) loses up to the interval.

A checkpoint is two files in one of two folders, :data:`SLOTS` (``checkpoints/slot0/``,
``checkpoints/slot1/``), written in turn:

- ``state.npz`` holds every model variable (weights *and* the random seed-generator states
  of the sampling layer and of any plugin layer that draws random numbers) as ``m0, m1, ...``
  and every optimizer variable (Adam's iteration count, moments, ...) as ``o0, o1, ...``;
  it is loaded with ``allow_pickle=False`` (plain arrays, never code);
- ``state.json``, written last, holds the write's number (``write``), the number of completed
  epochs, that epoch's logged metrics and the SHA-256 of ``state.npz``.

A write goes into the slot that does not hold the newest checkpoint, so that one survives until
the new one is complete: a write cut off at any point (even SIGKILL) leaves a slot whose
``state.json`` is missing, unreadable or names another ``state.npz``, and :func:`load` takes the
newest slot that checks out.  The single-file layout (``checkpoints/state.npz`` and ``state.json``,
no slots) is read too.

Training order is a function of (seed, epoch) (:func:`vaekit.training.epoch_order`), not of how many epochs
this process has run, so a resumed run sees the same batches an uninterrupted one would.
Together these make a resumed run reach the same test metrics as an uninterrupted one.

Writes due during training (``checkpoint_interval`` > 0) run in a background thread that is not a daemon: a process stopped
by Ctrl-C or SIGTERM finishes the write in flight before it exits.  The write at a stop runs in
line, with SIGINT/SIGTERM held back (:func:`deferred_signals`) meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit import adversarial
from vaekit.errors import ConfigError

ARTIFACT_DIR = "checkpoints"
STATE_FILE = "state.npz"
META_FILE = "state.json"
#: The two folders under ``checkpoints/`` that writes take in turn (see the module's docstring).
SLOTS = ("slot0", "slot1")
#: The points of a write, in order, at which :data:`on_write` is called: nothing written yet, ``state.npz``
#: written, ``state.json`` written (the write complete).
WRITE_POINTS = ("start", STATE_FILE, META_FILE)
#: Called as ``on_write(point, slot)`` at each of :data:`WRITE_POINTS` when set: how a test stops a write
#: (``os.kill(os.getpid(), signal.SIGKILL)``) at each point.  None in normal use.
on_write = None
#: Statuses ``--resume`` continues; a RUNNING run whose process died (:func:`vaekit.tracking.crashed`) too.
RESUMABLE = ("KILLED", "FAILED")


@contextlib.contextmanager
def deferred_signals():
    """Hold back SIGINT/SIGTERM for the block; then deliver them as their handlers would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in pending[:1]:
            handler = previous[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(s)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(model, into: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of every model and optimizer variable (``m0, m1, ...``, ``o0, o1, ...``), in ``into``.

    ``into`` is a dict this function filled before, or an empty one; its arrays are reused when
    the variables' shapes still match: fresh arrays cost page faults on every call, on the path that
    stops training, a reused one only the copy (figures in docs/benchmarks.md).
    Copies are taken from a read of each variable (so later training steps cannot change them)
    without the intermediate array ``Variable.numpy()`` makes.
    """
    variables = {f"m{i}": v for i, v in enumerate(model.variables)}
    variables.update({f"o{i}": v for i, v in enumerate(model.optimizer.variables)})
    if into.keys() != variables.keys() or any(into[k].shape != tuple(v.shape) for k, v in variables.items()):
        into.clear()
        into.update({k: np.empty(tuple(v.shape), dtype=v.dtype) for k, v in variables.items()})
    for key, variable in variables.items():
        read = getattr(variable.value, "read_value", None)  # TensorFlow: a tensor NumPy views without copying
        np.copyto(into[key], read() if read is not None else variable.numpy(), casting="no")
    return into


def write(arrays: dict[str, np.ndarray], epochs_done: int, logs: dict | None, run_id: str, tracking_uri: str,
          early_stop: tuple | None = None) -> str:
    """Write a snapshot as ``state.npz`` + ``state.json`` into a slot of run ``run_id``'s ``checkpoints/``;
    return the slot.

    The slot is the one that does not hold the newest checkpoint (:func:`_slot_metas`), so a write cut
    off at any point leaves that one whole.  ``early_stop``: ``(state, best_weights)`` of a
    :class:`vaekit.training.EarlyStopping`, kept as ``b0, b1, ...`` in ``state.npz`` and ``"early_stop"``
    in ``state.json``.
    """
    _quiet_downloads()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    state_dict, best = early_stop if early_stop else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        newest = _last_written.get((tracking_uri, run_id))
        if newest is None:  # this process's first write into the run (a resumed run has some already)
            newest = max(_slot_metas(client, run_id, Path(tmp) / "read").values(), key=lambda m: m["write"], default=None)
        slot = next(s for s in SLOTS if newest is None or s != newest["slot"])
        state = Path(tmp) / STATE_FILE
        np.savez(state, **arrays, **{f"b{i}": w for i, w in enumerate(best or [])})
        n_model = sum(k.startswith("m") for k in arrays)
        meta = {"write": newest["write"] + 1 if newest else 1, "epoch": int(epochs_done),
                "logs": {k: float(v) for k, v in (logs or {}).items()},
                "model_variables": n_model, "optimizer_variables": len(arrays) - n_model,
                "sha256": _sha256(state),
                "written_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        if state_dict is not None:
            meta["early_stop"] = {**state_dict, "best_variables": len(best or [])}
        (Path(tmp) / META_FILE).write_text(json.dumps(meta, indent=1))
        where = f"{ARTIFACT_DIR}/{slot}"
        with deferred_signals():
            # state.npz first: until state.json names its hash, the slot is not a checkpoint.
            _reached("start", slot)
            client.log_artifact(run_id, str(state), where)
            _reached(STATE_FILE, slot)
            client.log_artifact(run_id, str(Path(tmp) / META_FILE), where)
            _last_written[(tracking_uri, run_id)] = {"slot": slot, "write": meta["write"]}
            _reached(META_FILE, slot)
    return slot


#: ``(tracking URI, run id)`` → the slot and write number of the last complete write this process made there: the
#: slots are read from the store only before a process's first write into a run (one process writes a run at a time).
_last_written: dict[tuple[str, str], dict] = {}


def _reached(point: str, slot: str) -> None:
    if on_write is not None:
        on_write(point, slot)


def _slot_metas(client, run_id: str, tmp: Path) -> dict[str, dict]:
    """``{slot: its state.json}`` for every slot whose ``state.json`` can be read (with ``"slot"`` and
    ``"write"`` added: 0 for one in the single-file layout, kept in ``checkpoints/`` itself)."""
    found = {}
    for slot in (*SLOTS, ""):
        path = posixpath.join(ARTIFACT_DIR, slot, META_FILE) if slot else posixpath.join(ARTIFACT_DIR, META_FILE)
        if META_FILE not in {posixpath.basename(f.path) for f in client.list_artifacts(run_id, posixpath.dirname(path))}:
            continue
        try:
            meta = json.loads(Path(client.download_artifacts(run_id, path, str(tmp))).read_text())
            meta = {**meta, "epoch": int(meta["epoch"]), "write": int(meta.get("write", 0)), "slot": slot}
        except (ValueError, KeyError, TypeError, OSError):
            continue  # cut off while written (or changed): not a checkpoint
        found[slot] = meta
    return found


class Checkpointer:
    """Keeps the last completed epoch's state; writes it every ``interval`` seconds and at a stop.

    After every epoch (:meth:`submit`) the model and optimizer state is copied in memory, into
    arrays reused from epoch to epoch (:func:`snapshot`: this part stops training).  It is written to the run's artifacts when ``interval``
    seconds have passed since the last write began, in a background thread, one write in flight at
    a time.  ``interval=0``: after every epoch, in line, before the epoch's metrics are logged, so
    a SIGKILL after an epoch's metrics appear still finds that epoch's checkpoint.  Why not always every epoch: writing,
    hashing and copying conv2's state costs a share of training that matters when epochs are short
    (measured in docs/benchmarks.md, benchmarks/train.py and benchmarks/checkpoint_cost.py).

    :meth:`wait` must be called when training ends (it re-raises a failed write), so that a run
    is ended only after its last write is complete.  :meth:`kept_on_stop` wraps a run: when the
    run stops early (Ctrl-C, SIGTERM, an exception) the last epoch not yet written is written
    before the run ends.  The thread is not a daemon: a stopped process still finishes the
    write in flight, so the run keeps a whole checkpoint.
    """

    def __init__(self, model, interval: float):
        self.model = model
        self.interval = float(interval)
        self.writes = 0  #: checkpoints written (or being written) by this checkpointer
        self._pending: tuple | None = None  # write() arguments of an epoch not written yet
        self._buffers: list[dict] = []  # snapshot arrays, reused: one set, two while a write is in flight
        self._writing: dict | None = None  # the set the write in flight reads
        self._last_write = time.monotonic()  # training starts now: the first write is due an interval on
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: A :class:`vaekit.training.EarlyStopping` whose state each checkpoint keeps (set by training.fit).
        self.early_stop = None

    def keras_callback(self):
        import keras

        owner = self

        class CheckpointCallback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                owner.submit(epoch + 1, logs)

        return CheckpointCallback()

    def submit(self, epochs_done: int, logs: dict | None) -> None:
        """Take the state after ``epochs_done`` epochs; start writing it if a write is due."""
        import mlflow

        # The set a write in flight reads must not change; any other (the pending one included:
        # this epoch supersedes it) is overwritten.  No pending set while the copy runs, and
        # signals held back meanwhile (the copy is short): a stop never flushes a half-copied state.
        busy = self._writing if self._thread is not None and self._thread.is_alive() else None
        arrays = next((b for b in self._buffers if b is not busy), None)
        if arrays is None:
            arrays = {}
            self._buffers.append(arrays)
        self._pending = None
        with deferred_signals():
            snapshot(self.model, into=arrays)
            # The stopper's best weights are fresh arrays per improvement, never changed after: no copy needed.
            early = (self.early_stop.state(), self.early_stop.best_weights) if self.early_stop is not None else None
            idle = adversarial.idle_terms(self.model, epochs_done - 1)  # not logged, so not re-logged on resume
            logs = {k: v for k, v in (logs or {}).items() if k not in idle}
            self._pending = (arrays, epochs_done, logs, mlflow.active_run().info.run_id,
                             mlflow.get_tracking_uri(), early)
        if self.interval == 0:
            # In line: the epoch's metrics are logged after this returns, so a run killed (SIGKILL)
            # once they are in the store always has this epoch's checkpoint.  Costs the write's time
            # every epoch (conv2: see docs/benchmarks.md); that is what interval 0 asks for.
            self.flush()
        elif time.monotonic() - self._last_write >= self.interval:
            self.wait()
            args, self._pending = self._pending, None
            self._last_write = time.monotonic()
            self.writes += 1
            self._writing = args[0]
            self._thread = threading.Thread(target=self._write, args=args, name="vaekit-checkpoint")
            self._thread.start()

    def _write(self, *args) -> None:
        try:
            write(*args)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the write in flight is done; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def flush(self) -> None:
        """Write the last completed epoch now if it is not written yet (in line), after the one in flight."""
        self.wait()
        if self._pending is not None:
            args, self._pending = self._pending, None
            self.writes += 1
            write(*args)

    @contextlib.contextmanager
    def kept_on_stop(self):
        """On any exception in the block (Ctrl-C, SIGTERM, a failure): :meth:`flush`, then re-raise.

        A failed flush is not reported over the exception that stopped the run.
        """
        try:
            yield self
        except BaseException:
            with deferred_signals(), contextlib.suppress(Exception):
                self.flush()
            raise


def discard(artifact_uri: str) -> None:
    """Delete a finished run's checkpoints where the artifact store allows it (else leave them)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with contextlib.suppress(Exception):
        get_artifact_repository(artifact_uri).delete_artifacts(ARTIFACT_DIR)


@dataclass
class Checkpoint:
    run_id: str
    epoch: int
    logs: dict
    model_arrays: list
    optimizer_arrays: list
    written_at: str | None = None  #: when it was written (UTC, ISO 8601); None from an older vaekit
    #: ``(state, best_weights)`` of the run's early stopping (``--early-stop``), else None.
    early_stop: tuple | None = None


def _quiet_downloads() -> None:
    import os

    # MLflow draws a progress bar per download: noise for a few small files.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def resume_config(run_id: str, tracking_uri: str | None, trust_plugins: bool = False, echo=lambda line: None):
    """The settings of run ``run_id`` (its ``config.toml`` artifact), checked to be resumable.

    A RUNNING run whose process is gone (:func:`vaekit.tracking.owner_state`) is marked KILLED
    first (``echo`` gets the line saying so); a RUNNING run whose process lives is refused.

    Plugin files the run recorded (tag ``vaekit.plugin_files``) are imported only with
    ``trust_plugins``; otherwise a component only they provide is a :class:`PluginError` naming them.
    """
    _quiet_downloads()
    from vaekit import tracking
    from vaekit.config import build_config

    uri = tracking.resolve_tracking_uri(tracking_uri)
    client, run = tracking.get_run(run_id, uri, what=f"--resume {run_id}")
    if run.info.status == "RUNNING":
        state, why = tracking.owner_state(run)
        if state != tracking.GONE:
            raise ConfigError(f"--resume {run_id}: the run is RUNNING and {why[0].lower() + why[1:]}; only KILLED or "
                              "FAILED runs (or RUNNING ones whose process died) can be resumed"
                              + ("; vaekit runs close --force RUN_ID marks it KILLED if you know it stopped"
                                 if state in (tracking.OTHER_HOST, tracking.UNKNOWN) else ""))
        # Closed first, so that the run is no longer stuck RUNNING even if its checkpoint turns out unusable.
        echo(tracking.close(client, run))
    elif run.info.status not in RESUMABLE:
        raise ConfigError(f"--resume {run_id}: the run is {run.info.status}; only KILLED or FAILED runs can be resumed")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.toml", tmp)
        except Exception:
            raise ConfigError(f"--resume {run_id}: the run has no config.toml artifact") from None
        config = build_config(path)
    config.tracking_uri = uri
    from vaekit.components import resolve
    from vaekit.errors import PluginError
    from vaekit.plugins import load_run_plugin_files, plugin_hint

    # The run's own backend (its checkpoint's arrays fit any, but its settings say where it trained),
    # chosen before a plugin file could import Keras.
    config = config.with_backend()
    if trust_plugins:
        load_run_plugin_files(run.data.tags)

    try:
        resolve(config)
    except PluginError as exc:
        raise PluginError(f"--resume {run_id}: {exc}{plugin_hint(run.data.tags)}") from None
    return config


def logged_epochs(client, run_id: str) -> list[int]:
    """The steps (0-based epochs) at which the run logged its training ``loss``, in order, once each."""
    return sorted({m.step for m in client.get_metric_history(run_id, "loss")})


def load(run_id: str, tracking_uri: str, interval: float | None = None) -> Checkpoint:
    """The run's newest checkpoint that checks out; :class:`ConfigError` saying why if there is none.

    Slots are tried newest first (by the write number in ``state.json``); a slot whose
    ``state.npz`` is missing or is not the file whose SHA-256 its ``state.json`` names (a write cut
    off, a changed file) is passed over for the other.  Why none, truthfully: no checkpoint was
    written (the run stopped before its first epoch ended, or before its first write was due:
    ``interval`` is the run's ``--checkpoint-interval``), the first write was cut off (no readable
    ``state.json``), or no slot's pair matches.
    """
    _quiet_downloads()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    prefix = f"--resume {run_id}"
    if not client.list_artifacts(run_id, ARTIFACT_DIR):
        epochs = logged_epochs(client, run_id)
        if not epochs:
            why = "it stopped before its first epoch ended"
        elif interval:
            why = (f"it logged {len(epochs)} epoch(s) but stopped before its first checkpoint write, due "
                   f"{interval:g} s into training (--checkpoint-interval {interval:g}); a stop nothing can catch "
                   "(SIGKILL, the OOM killer) writes nothing")
        else:
            why = f"it logged {len(epochs)} epoch(s), but its checkpoints were deleted or never written"
        raise ConfigError(f"{prefix}: the run has no checkpoint ({why}); start it again with vaekit run")
    with tempfile.TemporaryDirectory() as tmp:
        metas = sorted(_slot_metas(client, run_id, Path(tmp) / "meta").values(), key=lambda m: -m["write"])
        if not metas:
            raise ConfigError(f"{prefix}: no readable {ARTIFACT_DIR}/*/{META_FILE}: the first checkpoint write was cut "
                              f"off ({STATE_FILE} is written first); start it again with vaekit run")
        refused = []
        for meta in metas:
            folder = posixpath.join(ARTIFACT_DIR, meta["slot"]) if meta["slot"] else ARTIFACT_DIR
            try:
                state = Path(client.download_artifacts(run_id, posixpath.join(folder, STATE_FILE), tmp))
            except Exception:
                refused.append(f"{folder}/{STATE_FILE} is missing ({META_FILE} names epoch {meta['epoch']})")
                continue
            if _sha256(state) != meta.get("sha256"):
                refused.append(f"{folder}/{STATE_FILE} does not match {folder}/{META_FILE} (its SHA-256 differs from the "
                               f"one named for epoch {meta['epoch']}: a write cut off between the two files, or a "
                               "changed file)")
                continue
            # The next write goes into the other slot: never over the checkpoint a resumed run starts from.
            _last_written[(tracking_uri, run_id)] = {"slot": meta["slot"], "write": meta["write"]}
            return _read(run_id, meta, state)
    raise ConfigError(f"{prefix}: {'; '.join(refused)}; start it again with vaekit run")


def _read(run_id: str, meta: dict, state: Path) -> Checkpoint:
    with np.load(state, allow_pickle=False) as npz:
        model_arrays = [npz[f"m{i}"] for i in range(meta["model_variables"])]
        optimizer_arrays = [npz[f"o{i}"] for i in range(meta["optimizer_variables"])]
        early = meta.get("early_stop")
        if early is not None:
            best = [npz[f"b{i}"] for i in range(early.pop("best_variables", 0))]
            early = (early, best or None)
    return Checkpoint(run_id, meta["epoch"], meta.get("logs", {}), model_arrays, optimizer_arrays, meta.get("written_at"),
                      early)


def describe(ckpt: Checkpoint, logged: list[int]) -> str:
    """One line saying what a resume continues from, e.g. ``resuming from epoch 2 (checkpoint written …)``."""
    when = f"checkpoint written {ckpt.written_at}" if ckpt.written_at else "checkpoint"
    line = f"run {ckpt.run_id}: resuming from epoch {ckpt.epoch} ({when})"
    later = [s + 1 for s in logged if s >= ckpt.epoch]
    if later:
        span = f"epoch {later[0]}" if len(later) == 1 else f"epochs {later[0]}-{later[-1]}"
        line += f"; {span} logged after it will be trained again (their first metrics are kept)"
    return line


def restore(model, ckpt: Checkpoint) -> None:
    """Put the checkpoint's model and optimizer state into a freshly built, compiled ``model``."""
    model.optimizer.build(model.trainable_variables)
    for kind, variables, arrays in (("model", model.variables, ckpt.model_arrays),
                                    ("optimizer", model.optimizer.variables, ckpt.optimizer_arrays)):
        if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
            raise ConfigError(f"--resume {ckpt.run_id}: the checkpoint's {kind} state does not fit the model built "
                              "from the run's settings (were the plugins changed?)")
        for v, a in zip(variables, arrays):
            v.assign(a)


def mark_resumed(run_id: str, ckpt: Checkpoint) -> dict[str, set[int]]:
    """On the resumed (active) run: note where it resumed, drop the old error, fill a missing last-epoch metric.

    Returns the steps each metric already has in the run's history: epochs logged after the
    checkpoint (a SIGKILL between writes) are trained again, and the caller must not log them a
    second time (:class:`vaekit.training.EpochLogger`), so that every epoch appears once per step.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(run_id)
    if "vaekit.error" in run.data.tags:
        client.delete_tag(run_id, "vaekit.error")
    mlflow.set_tag("vaekit.resumed_from_epoch", str(ckpt.epoch))
    logged = {key: {m.step for m in client.get_metric_history(run_id, key)}
              for key in set(run.data.metrics) | set(ckpt.logs)}
    # The checkpoint is written before the epoch's metrics: a stop in between leaves them only here.
    step = ckpt.epoch - 1
    missing = {k: v for k, v in ckpt.logs.items() if step not in logged[k]}
    if missing:
        mlflow.log_metrics(missing, step=step)
        for key in missing:
            logged[key].add(step)
    return logged
