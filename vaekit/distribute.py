"""Where and how a run trains: numeric precision, XLA, and tf.distribute strategies.

- ``precision``: ``float32`` (default), ``mixed_float16`` or ``mixed_bfloat16`` — a Keras
  mixed-precision policy set while the model is built (layers keep it afterwards).  Loss
  terms are computed in float32 (:meth:`vaekit.model.VAE.compute_terms` casts the model's
  outputs); under ``mixed_float16`` the optimizer is a ``LossScaleOptimizer`` (dynamic loss
  scaling; ``VAE.train_step`` calls ``optimizer.scale_loss``).
- ``jit_compile``: ``True``/``False`` forces XLA on or off; ``None`` is Keras's "auto"
  (XLA on GPUs, off on CPU-only machines and under a distribution strategy).
- ``strategy``: ``None`` (one device), ``mirrored`` (tf.distribute.MirroredStrategy over the
  machine's GPUs, or its logical CPUs where there are no GPUs) or ``multiworker``
  (MultiWorkerMirroredStrategy, cluster from ``TF_CONFIG``).  ``batch_size`` is the global
  batch: each of R replicas gets batch_size / R.

Testing aid: ``VAEKIT_CPU_DEVICES=N`` splits the CPU into N logical devices before
TensorFlow initialises them, so ``--strategy mirrored`` can be exercised without GPUs.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

from vaekit.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("mirrored", "multiworker")


def check(precision: str, strategy: str | None) -> None:
    """Raise :class:`ConfigError` for an unknown precision or strategy (no TensorFlow needed)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)} (or none for one device)")
    if strategy == "multiworker":
        tf_config_task()  # a malformed TF_CONFIG fails here, before anything starts


def tf_config_task() -> tuple[str, int] | None:
    """(task type, index) from ``TF_CONFIG``, or None when it is not set."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        task = cfg["task"]
        return str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"TF_CONFIG: expected JSON with cluster and task {{type, index}}: {exc}") from None


def is_chief(strategy: str | None) -> bool:
    """Whether this process logs the run: always, except for non-chief workers of a multiworker run.

    The chief is task ``chief`` 0, or ``worker`` 0 when the cluster has no ``chief``.
    """
    if strategy != "multiworker":
        return True
    task = tf_config_task()
    if task is None:
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    kind, index = task
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


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
    import tensorflow as tf

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
    import tensorflow as tf

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
    raise ConfigError(f"--strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


@contextmanager
def precision_policy(precision: str):
    """Set the Keras global dtype policy inside the block; restore the previous one after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build(build_model, strategy, config, *args):
    """``build_model(config, *args)`` with the config's precision, inside ``strategy.scope()``.

    Model, optimizer and metric variables are created in the scope, so they are mirrored
    across replicas.  (Create the strategy with :func:`make_strategy` before other
    TensorFlow work: multi-worker collectives must be configured first.)
    """
    with precision_policy(config.precision), strategy.scope():
        return build_model(config, *args)


def make_optimizer(config):
    """Adam at the config's learning rate, loss-scaled under ``mixed_float16``."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_options(config) -> dict:
    """Keyword arguments for ``model.compile``: the optimizer and the XLA choice."""
    return {"optimizer": make_optimizer(config), "jit_compile": "auto" if config.jit_compile is None else config.jit_compile}


def run_params(strategy) -> dict:
    """What the run logs about where it trained."""
    import tensorflow as tf

    # MultiWorkerMirroredStrategy's class is called CollectiveAllReduceStrategy: log the public name.
    name = ("MultiWorkerMirroredStrategy" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            else type(strategy).__name__)
    return {"distribute.replicas": strategy.num_replicas_in_sync, "distribute.strategy": name}
