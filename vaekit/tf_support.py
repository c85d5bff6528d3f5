"""Everything in vaekit that only TensorFlow has: tf.distribute, op determinism, its data pipeline.

Imported only when the backend is TensorFlow (:mod:`vaekit.distribute`, :mod:`vaekit.training`,
:mod:`vaekit.backend`), so on JAX or PyTorch vaekit imports no TensorFlow.

- :func:`make_strategy`: ``None`` → the default strategy; ``mirrored`` →
  ``MirroredStrategy`` over the GPUs (or the logical CPUs where there are none);
  ``multiworker`` → ``MultiWorkerMirroredStrategy`` with the cluster from ``TF_CONFIG``.
- ``VAEKIT_CPU_DEVICES=N`` splits the CPU into N logical devices before TensorFlow initialises
  them, so ``--strategy mirrored`` can be exercised without GPUs.
- :func:`batches`: an epoch's training batches as a ``tf.data`` pipeline (the order read from the
  caller when the epoch starts), without tf.data's autotuner.
"""

from __future__ import annotations

import os
import types

import numpy as np
import tensorflow as tf

from vaekit.errors import ConfigError


def enable_op_determinism() -> None:
    tf.config.experimental.enable_op_determinism()


def configure_cpu_devices() -> int | None:
    """Apply ``VAEKIT_CPU_DEVICES=N`` (split the first CPU into N logical devices); return N.

    Must run before TensorFlow initialises its devices; a process that already has them
    keeps what it has (and says so if that differs).
    """
    raw = os.environ.get("VAEKIT_CPU_DEVICES")
    if not raw:
        return None
    try:
        n = int(raw)
        if n < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"VAEKIT_CPU_DEVICES={raw!r}: expected a positive integer") from None
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ConfigError(f"VAEKIT_CPU_DEVICES={n}: TensorFlow already started with {have} CPU device(s) "
                              "in this process; set the variable before it starts") from None
    return n


def make_strategy(name: str | None):
    """The tf.distribute strategy for ``name`` (see the module docstring)."""
    configure_cpu_devices()
    if name is None:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        # On CPUs NCCL is not available; reducing to one device is the portable choice.
        cross = None if gpus else tf.distribute.ReductionToOneDevice()
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy {name!r}: expected mirrored or multiworker")


def strategy_name(strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    return "MultiWorkerMirroredStrategy" if is_multiworker(strategy) else type(strategy).__name__


def is_multiworker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def multiworker_workarounds(model) -> None:
    """Two Keras 3 limits of MultiWorkerMirroredStrategy, patched on this model only (keras-team/keras#20585).

    - Keras reduces the first distributed batch with ``strategy.reduce`` to build the model, which
      the strategy rejects.  The VAE is built before ``fit`` and compiled without Keras losses or
      metrics, so only the optimizer is left to build, which needs no batch.
    - Keras reduces a step's logs with ``reduce("MEAN", axis=0)``, which fails on scalars: each
      log gets a length-1 axis to take the mean over.
    """
    strategy = model.distribute_strategy
    train_step, test_step = model.train_step, model.test_step

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        with strategy.scope():
            self._symbolic_build(data_batch=None)

    def with_axis(step):
        return lambda data: {k: tf.reshape(v, [1]) for k, v in step(data).items()}

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)
    model.train_step, model.test_step = with_axis(train_step), with_axis(test_step)


def batches(x: np.ndarray, orders, batch_size: int, steps: int | None = None):
    """Batches of ``x`` visiting, in turn, each index order of the iterator ``orders()`` returns.

    Keras calls ``orders()`` each time it iterates the dataset: once per epoch when ``steps`` (the
    cardinality of one epoch, so the last compiled call of ``steps_per_execution`` stops at the
    epoch's end) is given, once per ``fit`` for an endless pipeline.  Each batch is gathered from ``x``
    without a permuted copy of the data.  No tf.data autotuning: a gather needs no tuning, and the
    autotuner's thread holds up deleting the iterator at the end of fit (figures in docs/benchmarks.md).
    ``x`` may be a tuple of arrays (a conditional run's spectrograms and labels):
    each batch is then that tuple, as the model's one input.
    """
    if isinstance(x, tuple):
        data = tuple(tf.convert_to_tensor(a) for a in x)
        gather = lambda idx: (tuple(tf.gather(d, idx) for d in data),)  # noqa: E731
        n = len(x[0])
    else:
        data = tf.convert_to_tensor(x)
        gather = lambda idx: tf.gather(data, idx)  # noqa: E731
        n = len(x)
    index_batches = tf.data.Dataset.from_generator(
        lambda: (o.astype(np.int64) for o in orders()), output_signature=tf.TensorSpec([n], tf.int64)).flat_map(
        lambda o: tf.data.Dataset.from_tensor_slices(o).batch(batch_size))
    options = tf.data.Options()
    options.autotune.enabled = False
    # MultiWorkerMirroredStrategy shards datasets; AUTO would look for files to split (there are none:
    # the source is a generator) and fail, so each worker takes its share of the elements.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    pipeline = index_batches.map(gather).prefetch(2).with_options(options)
    return pipeline if steps is None else pipeline.apply(tf.data.experimental.assert_cardinality(steps))
