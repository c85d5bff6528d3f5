"""Where and how a run trains, on any backend: precision, XLA, and several devices or machines.

- ``precision``: ``float32`` (default), ``mixed_float16`` or ``mixed_bfloat16`` — a Keras
  mixed-precision policy set while the model is built (layers keep it afterwards).  Loss terms are
  computed in float32 (:meth:`vaekit.model.VAE.compute_loss` casts the model's outputs); under
  ``mixed_float16`` the optimizer is a ``LossScaleOptimizer`` (dynamic loss scaling).
- ``jit_compile``: ``True``/``False`` forces XLA on or off; ``None`` is Keras's "auto".
- ``strategy``: ``None`` (one device), ``mirrored`` (every local device) or ``multiworker``
  (several machines).  ``batch_size`` is the global batch, split over the replicas.

  ========== =========================================== =============================================
  backend    ``mirrored``                                ``multiworker``
  ========== =========================================== =============================================
  tensorflow ``tf.distribute.MirroredStrategy`` (GPUs,   ``MultiWorkerMirroredStrategy``, cluster from
             else logical CPUs)                          ``TF_CONFIG``; the chief logs
  jax        ``keras.distribution.DataParallel`` over    ``keras.distribution.initialize()`` from
             ``jax.local_devices()``                     ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
                                                         ``…_NUM_PROCESSES``, ``…_PROCESS_ID``, then
                                                         DataParallel over every process's devices;
                                                         process 0 logs
  torch      refused (one device)                        refused
  ========== =========================================== =============================================

Importing this module imports no backend; :func:`check` and :func:`is_chief` need none.
Testing aids: ``VAEKIT_CPU_DEVICES=N`` (TensorFlow) and
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX) give N CPU devices.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from vaekit.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("mirrored", "multiworker")
#: The variables ``keras.distribution.initialize`` reads on JAX.
JAX_CLUSTER_VARS = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                    "KERAS_DISTRIBUTION_PROCESS_ID")


def check(precision: str, strategy: str | None, backend: str) -> None:
    """Raise :class:`ConfigError` for an unknown precision or strategy, or one the backend lacks."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)} (or none for one device)")
    if strategy is not None and backend == "torch":
        raise ConfigError(f"--strategy {strategy}: the torch backend trains on one device; "
                          "use --backend tensorflow or jax for several")
    if strategy == "multiworker":
        process(strategy, backend)  # a malformed cluster description fails here, before anything starts


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


def process(strategy: str | None, backend: str) -> tuple[int, int]:
    """(this process's index, number of processes) of a multiworker run; ``(0, 1)`` otherwise."""
    if strategy != "multiworker":
        return 0, 1
    if backend == "jax":
        raw = {v: os.environ.get(v) for v in JAX_CLUSTER_VARS[1:]}
        if not any(raw.values()):
            return 0, 1
        try:
            count, index = int(raw[JAX_CLUSTER_VARS[1]]), int(raw[JAX_CLUSTER_VARS[2]])
            if not 0 <= index < count:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{', '.join(JAX_CLUSTER_VARS[1:])}: expected a process count and an index below it, "
                              f"got {raw}") from None
        return index, count
    task = tf_config_task()
    if task is None:
        return 0, 1
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    kind, index = task
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    # The chief is task chief 0, or worker 0 when the cluster has no chief: it is "process 0".
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return (0 if chief else index + ("chief" in cluster)), max(workers, 1)


def is_chief(strategy: str | None, backend: str) -> bool:
    """Whether this process logs the run: always, except for the non-chief workers of a multiworker run."""
    return process(strategy, backend)[0] == 0


@dataclass
class Placement:
    """Where the model lives and trains: build it in :meth:`scope`; log :attr:`params`."""

    replicas: int = 1
    name: str = "default"
    scope: object = field(default=nullcontext, repr=False)  #: a context-manager factory
    #: (index, count) of this process among the processes that feed one global batch together.
    shard: tuple[int, int] = (0, 1)
    #: Called on the compiled model (TensorFlow multi-worker work-arounds), or None.
    prepare: object = field(default=None, repr=False)

    @property
    def params(self) -> dict:
        return {"distribute.replicas": self.replicas, "distribute.strategy": self.name}


def make_placement(strategy: str | None, backend: str) -> Placement:
    """The :class:`Placement` for ``strategy`` on ``backend`` (see the module docstring).

    Make it before other backend work: multi-worker collectives must be configured first.
    """
    if backend == "tensorflow":
        from vaekit import tf_support

        tf_strategy = tf_support.make_strategy(strategy)
        multiworker = tf_support.is_multiworker(tf_strategy)
        return Placement(replicas=tf_strategy.num_replicas_in_sync, name=tf_support.strategy_name(tf_strategy),
                         scope=tf_strategy.scope, prepare=tf_support.multiworker_workarounds if multiworker else None)
    if strategy is None:
        return Placement()
    if backend != "jax":
        raise ConfigError(f"--strategy {strategy}: not available on the {backend} backend")
    import keras

    if strategy == "multiworker" and process(strategy, backend)[1] > 1:
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    import jax

    return Placement(replicas=len(devices), name="DataParallel", scope=distribution.scope,
                     shard=(jax.process_index(), jax.process_count()))


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


def make_optimizer(config):
    """Adam at the config's learning rate, loss-scaled under ``mixed_float16``."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_options(config) -> dict:
    """Keyword arguments for ``model.compile``: the optimizer, the XLA choice, steps per compiled call."""
    return {"optimizer": make_optimizer(config), "jit_compile": "auto" if config.jit_compile is None else config.jit_compile,
            "steps_per_execution": config.steps_per_execution}
