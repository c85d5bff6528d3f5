"""Training: the data order of each epoch, the batches, callbacks, optimizer, fit and evaluate.

Backend-agnostic: ``model.fit`` is fed a :class:`EpochBatches` (a ``keras.utils.PyDataset``) on
JAX and PyTorch, and the same batches as a ``tf.data`` pipeline on TensorFlow
(:func:`vaekit.tf_support.batches`).  Each epoch visits the examples in :func:`epoch_order`
(a function of seed and epoch only), so a resumed run trains exactly as an uninterrupted one.
Which backend a run is on is ``config.backend``, resolved before Keras was imported
(:meth:`vaekit.config.RunConfig.with_backend`); :func:`build` refuses a config without it.
"""

from __future__ import annotations

import sys
import time

import keras
import numpy as np

from vaekit import adversarial, distribute
from vaekit.backend import BACKENDS
from vaekit.errors import TrainingError
from vaekit.model import build_vae


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which the ``n`` training examples are visited in ``epoch`` (0-based)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def split_validation(x, fraction: float, seed: int):
    """A seeded random hold-out of ``fraction`` of the training set (none when 0); ``x`` an array, or a
    tuple of arrays (a conditional run's spectrograms and labels) split alike."""
    n = len(x[0]) if isinstance(x, tuple) else len(x)
    if fraction <= 0 or n < 2:
        return x, None
    n_val = min(max(1, int(round(n * fraction))), n - 1)  # never an empty training set
    order = np.random.default_rng(seed).permutation(n)
    if isinstance(x, tuple):
        return tuple(a[order[n_val:]] for a in x), tuple(a[order[:n_val]] for a in x)
    return x[order[n_val:]], x[order[:n_val]]


def rows(x) -> int:
    """Examples in ``x``: an array, or a tuple of arrays (spectrograms and labels)."""
    return len(x[0]) if isinstance(x, tuple) else len(x)


class EpochOrder:
    """The visiting order of the epoch being trained: :func:`epoch_order` of the epoch that
    :meth:`callback`'s ``on_epoch_begin`` last announced (``first_epoch`` before training starts)."""

    def __init__(self, n: int, seed: int, first_epoch: int):
        self.n, self.seed, self.epoch = n, seed, first_epoch
        self._cached: tuple[int, np.ndarray] | None = None

    def current(self) -> np.ndarray:
        return self.at(self.epoch)

    def at(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.n, self.seed, epoch))
        return self._cached[1]

    def callback(self) -> keras.callbacks.Callback:
        """Sets the epoch; Keras calls it before it starts reading an epoch's batches."""
        owner = self

        class EpochOrderCallback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                owner.epoch = epoch

        return EpochOrderCallback()


class EpochBatches(keras.utils.PyDataset):
    """The batches of one epoch of ``x``, in ``order.current()``: Keras reads it anew each epoch.

    One epoch, not an endless stream: with ``steps_per_execution`` > 1 the last compiled call of an
    epoch then stops at the epoch's end instead of reading into the next.  ``shard=(k, K)``: this
    process feeds rows ``k/K … (k+1)/K`` of each global batch (multi-process data parallelism on JAX).
    ``x`` may be a tuple of arrays (a conditional run's spectrograms and labels): a batch is then the tuple.
    """

    def __init__(self, x, order: EpochOrder, batch_size: int, shard=(0, 1)):
        super().__init__()
        self.x, self.order, self.batch_size, self.shard = x, order, batch_size, shard

    @property
    def num_batches(self):
        return -(-rows(self.x) // self.batch_size)

    def __getitem__(self, step):
        idx = self.order.current()[step * self.batch_size:(step + 1) * self.batch_size]
        k, count = self.shard
        if count > 1:
            size = len(idx) // count
            idx = idx[k * size:(k + 1) * size]
        if isinstance(self.x, tuple):
            return (tuple(a[idx] for a in self.x),)
        return (self.x[idx],)


def batches(x: np.ndarray, order: EpochOrder, batch_size: int, backend: str, shard=(0, 1), endless: bool = False):
    """Training batches in ``order`` for ``backend`` (the run's, ``config.backend``): one epoch, read anew each
    epoch; or, with ``endless`` (TensorFlow only), every epoch from ``order.epoch`` on in one ``tf.data`` pipeline.

    Endless saves re-creating the pipeline each epoch (figures in docs/benchmarks.md) but needs
    ``fit(steps_per_epoch=...)`` and one step per compiled call:
    with ``steps_per_execution`` > 1 the last call of an epoch would read into the next.
    """
    if backend == "tensorflow":
        import itertools

        from vaekit import tf_support

        if endless:
            return tf_support.batches(x, lambda: (order.at(e) for e in itertools.count(order.epoch)), batch_size)
        return tf_support.batches(x, lambda: iter([order.current()]), batch_size, -(-rows(x) // batch_size))
    return EpochBatches(x, order, batch_size, shard)


class EarlyStopping(keras.callbacks.Callback):
    """Stops training once ``monitor`` has not improved (decreased) for ``patience`` epochs; keeps the best weights.

    Like ``keras.callbacks.EarlyStopping(restore_best_weights=True)``, with its state in the open so a
    checkpoint can keep it (:meth:`state`, :attr:`best_weights`) and a resumed run can go on from it
    (``resume``: a checkpoint's ``(state, best_weights)``).  Epochs are 0-based here, 1-based in
    :meth:`results`.  :meth:`restore` puts the best epoch's weights back into the model.
    """

    def __init__(self, monitor: str, patience: int, resume=None):
        super().__init__()
        self.monitor, self.patience = monitor, int(patience)
        self.best, self.best_epoch, self.wait, self.stopped_epoch = float("inf"), None, 0, None
        self.best_weights: list | None = None
        if resume:
            state, self.best_weights = resume
            self.best, self.wait = float(state["best"]), int(state["wait"])
            self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]

    @property
    def done(self) -> bool:
        """Whether it has decided to stop (a resumed run that had decided trains no further)."""
        return self.stopped_epoch is not None

    def state(self) -> dict:
        return {"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped_epoch": self.stopped_epoch}

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise TrainingError(f"--monitor {self.monitor}: not among this epoch's metrics ({', '.join(sorted(logs or {}))})")
        value = float(value)
        if value < self.best:
            # get_weights() makes fresh copies: a checkpoint may keep referring to this list.
            self.best, self.best_epoch, self.wait, self.best_weights = value, epoch, 0, self.model.get_weights()
        else:
            self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def restore(self, model) -> None:
        if self.best_weights is not None:
            model.set_weights(self.best_weights)

    def results(self) -> dict[str, float]:
        """``best_epoch`` and ``stopped_epoch`` (1-based; 0: it did not stop before --epochs)."""
        return {"best_epoch": float(self.best_epoch + 1 if self.best_epoch is not None else 0),
                "stopped_epoch": float(self.stopped_epoch + 1 if self.stopped_epoch is not None else 0)}


def check_monitor(config, terms) -> None:
    """:class:`ConfigError` unless ``--monitor`` names an epoch metric of this run (with ``--early-stop``)."""
    from vaekit.errors import ConfigError

    if not config.early_stop:
        return
    monitorable = [t for t in terms if t not in adversarial.TERMS]  # the phase's terms are 0 during its warm-up
    names = [*monitorable, *(f"val_{t}" for t in monitorable)]
    if config.monitor not in names:
        if config.monitor.removeprefix("val_") in terms:
            raise ConfigError(f"--monitor {config.monitor}: a term of the adversarial phase, 0 during its warm-up; "
                              "monitor the loss or one of its terms")
        raise ConfigError(f"--monitor {config.monitor}: not an epoch metric of this run; choose one of {', '.join(names)}")
    if config.monitor.startswith("val_") and config.validation_split <= 0:
        raise ConfigError(f"--monitor {config.monitor} needs validation data: --validation-split above 0 "
                          f"(or --monitor {config.monitor[4:]})")


def build(config, comps, ds, placement):
    """The VAE for ``config``, built and compiled in the placement's scope, with its loss's term names.

    Seeds Python, NumPy and the backend with ``config.seed`` first.  Model, optimizer and metric
    variables are created in the scope (mirrored or sharded over the replicas), under the config's
    precision policy.
    """
    if config.backend not in BACKENDS:  # a bug in the caller, not bad input
        raise ValueError(f"config.backend {config.backend!r}: resolve it first (RunConfig.with_backend)")
    keras.utils.set_random_seed(config.seed)
    with distribute.precision_policy(config.precision), placement.scope():
        model, terms = build_vae(config, comps, ds)
        check_monitor(config, terms)
        if config.backend == "tensorflow":
            model.loss_scale = 1.0 / placement.replicas  # tf.distribute sums the replicas' gradients
        model.compile(**distribute.compile_options(config))
    if placement.prepare is not None:
        placement.prepare(model)
    return model, terms


class EpochLogger(keras.callbacks.Callback):
    """Per-epoch MLflow metrics, the loss's epoch, and a stop at the first non-finite loss.

    ``logged`` (metric → steps the run already has, after a resume): those are not logged again,
    so an epoch logged before a SIGKILL and trained again from an older checkpoint appears once.
    """

    # Keras then runs the batch hook in a worker thread: reading the loss there does not stall
    # the training loop each batch (a NaN raised there re-raises in fit's thread).
    async_safe = True

    def __init__(self, vae, logged: dict[str, set[int]] | None = None):
        super().__init__()
        self.vae = vae
        self.epoch = 0
        self.logged = logged or {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.vae.set_epoch(epoch)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise TrainingError(
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                "try a lower --learning-rate or a smaller loss.lambda"
            )

    def on_epoch_end(self, epoch, logs=None):
        import mlflow

        idle = adversarial.idle_terms(self.vae, epoch)  # the adversarial phase's terms before it starts: 0, not logged
        new = {k: float(v) for k, v in (logs or {}).items() if epoch not in self.logged.get(k, ()) and k not in idle}
        if new:
            mlflow.log_metrics(new, step=epoch)


def fit(model, ds, config, progress: bool, initial_epoch: int = 0, checkpointer=None,
        callbacks: list | None = None, shard=(0, 1), logged: dict[str, set[int]] | None = None,
        early_state=None) -> dict[str, float]:
    """Train ``model`` on the dataset from ``initial_epoch``; return training seconds and samples/s.

    Each epoch visits the examples in the order :func:`epoch_order` gives, so a resumed run trains
    as an uninterrupted one, and is handed to ``checkpointer`` (by default a
    :class:`vaekit.checkpoint.Checkpointer` with ``config.checkpoint_interval``), which writes
    checkpoints into the active run.  A write in flight is complete when this returns.
    ``callbacks``: more Keras callbacks, called after vaekit's own.  ``logged``: steps the run's
    metrics already have (a resume), not logged again (:class:`EpochLogger`).

    With ``config.early_stop`` an :class:`EarlyStopping` on ``config.monitor`` (resumed from
    ``early_state``, a checkpoint's) may end training before ``config.epochs``; the best epoch's
    weights are then put back in the model, and ``best_epoch`` and ``stopped_epoch`` returned.
    """
    from vaekit import checkpoint
    from vaekit.model import model_inputs

    x_train, x_val = split_validation(model_inputs(config, ds, "train"), config.validation_split, config.seed)
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    # The checkpoint's snapshot is taken before the epoch's metrics are logged (it records them, so a
    # resume re-logs metrics a stop in between lost).  A due write overlaps the next epoch, except with
    # interval 0: then it completes first, so an epoch whose metrics are in the store has its checkpoint.
    if checkpointer is None:
        checkpointer = checkpoint.Checkpointer(model, config.checkpoint_interval)
    order = EpochOrder(rows(x_train), config.seed, initial_epoch)
    stopper = EarlyStopping(config.monitor, config.early_stop, early_state) if config.early_stop else None
    checkpointer.early_stop = stopper  # the checkpoint keeps its best weights and counters
    # The stopper before the checkpointer: an epoch's checkpoint holds the decision taken on that epoch.
    callbacks = [order.callback(), *([stopper] if stopper else []), checkpointer.keras_callback(),
                 EpochLogger(model, logged), *(callbacks or [])]
    start = time.perf_counter()
    endless = config.backend == "tensorflow" and config.steps_per_execution == 1
    steps = -(-rows(x_train) // config.batch_size) if endless else None
    if initial_epoch < config.epochs and not (stopper and stopper.done):
        # A conditional run's (x, label) validation data is one element: a 2-tuple would be read as (x, y).
        model.fit(batches(x_train, order, config.batch_size, config.backend, shard, endless), epochs=config.epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=steps,
                  validation_data=(x_val,) if isinstance(x_val, tuple) else x_val, shuffle=False, verbose=verbose,
                  callbacks=callbacks)
    checkpointer.wait()
    seconds = time.perf_counter() - start
    last = stopper.stopped_epoch + 1 if stopper and stopper.done else config.epochs
    done = max(0, last - initial_epoch)
    out = {"train_seconds": seconds}
    if stopper:
        stopper.restore(model)  # evaluation, samples and the logged model use the best epoch
        out.update(stopper.results())
    if done:
        out["train_samples_per_s"] = rows(x_train) * done / seconds
    return out


def evaluate(model, ds, config) -> dict[str, float]:
    """The loss terms on the test set (with its labels in a conditional run), as ``test_<term>``: means over the clips."""
    from vaekit.model import model_inputs

    model.set_epoch(int(keras.ops.convert_to_numpy(model.epoch)))  # after a resume that trains no further, the phase is the checkpoint's
    result = model.evaluate(model_inputs(config, ds, "test"), batch_size=config.batch_size, verbose=0, return_dict=True)
    return {f"test_{k}": float(v) for k, v in result.items()}
