"""The component kinds: one record per kind, from which hooks, listings, config and CLI derive.

A kind's record names its hook (checked against :mod:`vaekit.hookspecs` by a test), the
arguments the core passes to its ``build`` function (the contract; they are not options), the
:class:`vaekit.config.RunConfig` field that selects it, and a line of help for ``vaekit plugins``
and the CLI.  Adding a kind: a record here and its hook spec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  #: singular, as in ``--option NAME.KEY=VALUE`` and error messages
    plural: str  #: as ``vaekit plugins`` heads its list
    contract: tuple[str, ...]  #: positional parameters of ``build``, passed by the core
    help: str  #: what the selecting flag does (the CLI's help, the docs' flags row)
    #: Whether a build function of this kind may declare the keyword ``condition`` (a conditional run's
    #: number of classes; see :mod:`vaekit.components`): then it is part of the contract, not an option.
    conditional: bool = False

    @property
    def hook(self) -> str:
        """The hook a plugin implements to register components of this kind."""
        return f"register_{self.plural}"

    @property
    def flag(self) -> str:
        """The ``vaekit run`` flag (and RunConfig field) that selects the component."""
        return f"--{self.name}"


KINDS: tuple[Kind, ...] = (
    Kind("encoder", "encoders", ("input_shape", "latent_dim"), "Encoder component.", conditional=True),
    Kind("decoder", "decoders", ("latent_dim", "output_shape"), "Decoder component.", conditional=True),
    Kind("loss", "losses", (), "Loss component."),
    Kind("vocoder", "vocoders", ("audio",), "Vocoder component (mel dB → waveform)."),
    Kind("dataset", "datasets", ("path", "audio"), "Dataset component by name (overrides detection from --data)."),
    # Optional: a run without one (the default) has no adversarial phase.
    Kind("discriminator", "discriminators", ("input_shape",),
         "Discriminator component: trains the VAE adversarially after --adversarial-warmup epochs."),
    # Several at once: a comma-separated list of names (RunConfig.metrics), so name and plural are one word.
    Kind("metrics", "metrics", (), "Audio metrics to compute at the end of the run, comma-separated."),
)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
#: The keyword parameter by which an encoder or decoder build function says it takes a condition.
CONDITION = "condition"
NAMES: tuple[str, ...] = tuple(BY_NAME)


def get(name: str) -> Kind:
    """The kind called ``name``; :class:`vaekit.errors.PluginError` listing the kinds otherwise."""
    from vaekit.errors import PluginError

    if name not in BY_NAME:
        raise PluginError(f"unknown component kind {name!r}; kinds are: {', '.join(NAMES)}")
    return BY_NAME[name]
