"""Which Keras backend a process trains and loads models with: TensorFlow, JAX or PyTorch.

:func:`select` is the one place a backend is chosen: ``--backend`` (``backend = "jax"`` in a config
file), else ``KERAS_BACKEND``, else :data:`DEFAULT`.  Keras reads ``KERAS_BACKEND`` once, when it is
first imported, so it must run before anything imports Keras; vaekit's commands call it first.  A run
carries the name it returns in ``RunConfig.backend`` (:meth:`vaekit.config.RunConfig.with_backend`),
and the code it runs reads it from there, not from Keras.  Importing this module imports no backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from vaekit.errors import ConfigError

#: backend → (module that must be importable, the pip extra that installs it; None: always installed)
BACKENDS = {"tensorflow": ("tensorflow", None), "jax": ("jax", "jax"), "torch": ("torch", "torch")}
DEFAULT = "tensorflow"
#: How ``--help`` shows where the backend comes from when ``--backend`` is not given (:func:`resolve`'s order).
ORDER = f"KERAS_BACKEND, else {DEFAULT}"


def resolve(name: str | None = None) -> str:
    """``name``, else ``KERAS_BACKEND``, else :data:`DEFAULT`; checked to be a backend vaekit knows."""
    chosen = name or os.environ.get("KERAS_BACKEND") or DEFAULT
    if chosen not in BACKENDS:
        where = "--backend" if name else "KERAS_BACKEND"
        raise ConfigError(f"{where} {chosen!r}: expected one of {', '.join(BACKENDS)}")
    return chosen


def select(name: str | None = None) -> str:
    """Resolve ``name`` (:func:`resolve`), make it the backend Keras uses in this process; return its name.

    Calling it again with the name it returned changes nothing.  A backend that is not installed is a
    :class:`ConfigError` naming the extra that installs it; so is asking for another backend once Keras
    was imported with one.
    """
    chosen = resolve(name)
    module, extra = BACKENDS[chosen]
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != chosen:
            raise ConfigError(f"--backend {chosen}: Keras was already imported with the {current} backend in this "
                              "process; set the backend before Keras is imported (KERAS_BACKEND)")
        return chosen
    if importlib.util.find_spec(module) is None:
        how = f'pip install -e ".[{extra}]"' if extra else 'pip install -e .'
        raise ConfigError(f"--backend {chosen}: {module} is not installed; install it with {how}")
    os.environ["KERAS_BACKEND"] = chosen
    return chosen


def version(name: str) -> str:
    """The installed version of a backend's package."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(BACKENDS[name][0])
    except PackageNotFoundError:
        return "unknown"


def make_deterministic(name: str) -> None:
    """Ask the backend for deterministic kernels (same results run after run, on GPUs too; slower).

    TensorFlow: op determinism.  JAX: XLA's deterministic GPU ops (must be set before JAX starts;
    CPU results repeat anyway).  PyTorch: ``torch.use_deterministic_algorithms``.
    """
    if name == "tensorflow":
        from vaekit import tf_support

        tf_support.enable_op_determinism()
    elif name == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(True)


def keep_tensorflow_out() -> None:
    """On JAX or PyTorch, stop Keras importing TensorFlow just because it is installed.

    Keras imports TensorFlow lazily to recognise its objects (``tf.TensorShape`` while saving a
    model, ``tf.random`` while seeding) whenever it is installed, whatever the backend: time and
    memory spent in a process that never uses it.  Marking Keras' lazy module unavailable (a
    private attribute) gives the behaviour Keras has where TensorFlow is not installed, as on GPU
    hosts with JAX alone.  Nothing changes once TensorFlow is imported.
    """
    import keras
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if keras.backend.backend() != "tensorflow" and lazy.module is None and "tensorflow" not in sys.modules:
        lazy._available = False
