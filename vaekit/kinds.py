"""The component kinds: one record per kind, from which hooks, listings, config and CLI derive.

A kind's record names its hook (checked against :mod:`vaekit.hookspecs` by a test), the
arguments the core passes to its ``build`` function (the contract; they are not options), the
:class:`vaekit.config.RunConfig` field that selects it, whether that field names one component or
several, and a line of help for ``vaekit plugins`` and the CLI.

Adding a kind takes, besides its record here:

- its ``register_PLURAL`` hook spec in :mod:`vaekit.hookspecs`, documenting the contract (a test
  checks the two match one to one), and the hook's rows in docs/plugins.md's hooks table and
  docs/components.md's contracts (a test checks both);
- the :class:`vaekit.config.RunConfig` field named after it, with its default (a dataclass field
  cannot be derived from this record; it gives the ``vaekit run`` flag, whose help is this record's),
  and that flag's row in docs/usage.md's flags table (a test checks it);
- the core code that uses the built component: :func:`vaekit.components.resolve` looks up one
  component per kind by its field (a ``multiple`` kind is selected by its own function there, as
  ``metrics`` is by :func:`vaekit.components.select_metrics`), but what is done with it (a model part,
  a loss, a vocoder, metrics computed) is written where the run uses it.

With just the record and its hook spec, plugins can register components of the kind, ``vaekit
plugins`` lists them and :func:`vaekit.components.get_component` finds and builds them (with their
contract and options checked); a run selects one only once the field and the code that uses it exist.
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
    #: Whether a run selects several components of this kind at once (its RunConfig field is a comma-separated
    #: list of names, None for the kind's default set; :func:`vaekit.components.resolve` gives a list, and an
    #: ``--option KIND.KEY=VALUE`` goes to every selected component that has the option) rather than one.
    multiple: bool = False

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
    # Several at once (RunConfig.metrics is a comma-separated list of names), so name and plural are one word.
    Kind("metrics", "metrics", (), "Audio metrics to compute at the end of the run, comma-separated.", multiple=True),
)
#: The keyword parameter by which an encoder or decoder build function says it takes a condition.
CONDITION = "condition"


def names() -> tuple[str, ...]:
    """The kinds' names, in :data:`KINDS`' order, read when called (so a kind added to :data:`KINDS` is in them)."""
    return tuple(k.name for k in KINDS)


def get(name: str) -> Kind:
    """The kind called ``name``; :class:`vaekit.errors.PluginError` listing the kinds otherwise."""
    from vaekit.errors import PluginError

    for kind in KINDS:
        if kind.name == name:
            return kind
    raise PluginError(f"unknown component kind {name!r}; kinds are: {', '.join(names())}")

