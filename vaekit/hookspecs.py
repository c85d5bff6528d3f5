"""The hooks a vaekit plugin can implement.

Each hook receives a ``register`` callable; the plugin calls ``register(name, build)``
once per component it provides.  ``build`` is called lazily, only for the component a
run actually uses, so a plugin module should import heavy libraries (Keras, a backend)
inside ``build``, not at module level: Keras reads its backend once, when first imported.

Each hook here is one record of :data:`vaekit.kinds.KINDS` (a test checks they match one to one), and its
docstring, the contract of the kind's ``build``, is made from that record (:meth:`vaekit.kinds.Kind.doc`).
"""

import pluggy

from vaekit import kinds

_marker = pluggy.HookspecMarker("vaekit")


def hookspec(function):
    """A hook spec whose docstring is its kind's contract, from the kind's record."""
    function.__doc__ = next(k for k in kinds.KINDS if k.hook == function.__name__).doc()
    return _marker(function)


@hookspec
def register_encoders(register): ...


@hookspec
def register_decoders(register): ...


@hookspec
def register_losses(register): ...


@hookspec
def register_vocoders(register): ...


@hookspec
def register_datasets(register): ...


@hookspec
def register_discriminators(register): ...


@hookspec
def register_metrics(register): ...
