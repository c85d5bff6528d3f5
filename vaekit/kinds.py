"""The component kinds: one record per kind, from which hooks, listings, config, CLI and params derive.

A kind's record names its hook (checked against :mod:`vaekit.hookspecs` by a test), the
arguments the core passes to its ``build`` function and what ``build`` returns (the contract, written
only here: the hook spec's docstring is made from it, docs/components.md's row is tested against it),
whether a run selects one component of the kind or several, and a line of help for the CLI.
Read :data:`KINDS` through :func:`names` and :func:`get` when it is needed: a copy taken at import misses a kind added later.

Adding a kind takes its record here and its ``register_PLURAL`` hook spec in :mod:`vaekit.hookspecs`
(a stub; a test checks the two match one to one).  With those, plugins register components of the kind,
``vaekit plugins`` lists them, ``--option KIND.KEY=VALUE`` sets their options, ``vaekit run --component
KIND=NAME`` selects one (:meth:`vaekit.config.RunConfig.selected`; :func:`vaekit.components.resolve` finds it
and checks its options before the run starts) and the run logs it as params like the others
(tests/test_plugins.py adds a kind ``widget`` and runs one).  What is done with the component is code
written where it is used.  A built-in kind, besides, has its own :class:`vaekit.config.RunConfig` field
(the ``--KIND NAME`` flag with its default, whose help is this record's) and rows in docs/usage.md's flags,
docs/plugins.md's hooks and docs/components.md's contracts tables (tests check each against the code).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  #: singular, as in ``--option NAME.KEY=VALUE`` and error messages
    plural: str  #: as ``vaekit plugins`` heads its list
    contract: tuple[str, ...]  #: positional parameters of ``build``, passed by the core
    help: str  #: what the selecting flag does (the CLI's help, the docs' flags row)
    #: The contract: what ``build`` returns and what that must do (Markdown).  Written here only: the hook spec's
    #: docstring is made from it (:meth:`doc`) and docs/components.md's row is tested against it (:meth:`docs_row`).
    returns: str
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
    def signature(self) -> str:
        """``build(CONTRACT..., **options)``, as docs and errors write the build function."""
        return f"build({', '.join([*self.contract, '**options'])})"

    def doc(self) -> str:
        """The hook spec's docstring: the contract, from this record."""
        text = f"Register {self.plural}: `{self.signature}` → {self.returns}."
        if self.conditional:
            text += ("\n\nA build function that declares `condition=None` takes a condition (`--condition`; "
                     "docs/components.md, \"Conditional encoders and decoders\").")
        return text

    def docs_row(self) -> str:
        """This kind's row in docs/components.md's table of contracts."""
        return f"| {self.name} | `{self.hook}(register)` | `{self.signature}` | {self.returns} |"

    @property
    def flag(self) -> str:
        """The ``vaekit run`` flag (and RunConfig field) that selects the component."""
        return f"--{self.name}"


KINDS: tuple[Kind, ...] = (
    Kind("encoder", "encoders", ("input_shape", "latent_dim"), "Encoder component.",
         "a `keras.Model` mapping x `(batch, H, W, 1)` to `(z_mean, z_log_var)`, each `(batch, latent_dim)`",
         conditional=True),
    Kind("decoder", "decoders", ("latent_dim", "output_shape"), "Decoder component.",
         "a `keras.Model` mapping z `(batch, latent_dim)` to x̂ `(batch, H, W, 1)`", conditional=True),
    Kind("loss", "losses", (), "Loss component.",
         "a callable `(x, x_hat, z_mean, z_log_var)` → dict of scalar tensors, one named `loss` (optimised); every "
         "term is tracked per epoch. If it also takes `epoch=`, it gets the 0-based epoch as a float tensor"),
    Kind("vocoder", "vocoders", ("audio",), "Vocoder component (mel dB → waveform).",
         "a callable: mel spectrograms in dB `(N, n_mels, frames)` → waveforms `(N, samples)` at `audio.sr`; `audio` "
         "has `sr`, `n_fft`, `hop_length`, `n_mels`, `fmin`, `fmax`, `duration`, `samples`"),
    Kind("dataset", "datasets", ("path", "audio"), "Dataset component by name (overrides detection from --data).",
         "a `vaekit.data.Dataset` (optionally with `labels`: name → `vaekit.data.Labels(name, classes, train, test)`, "
         "class indices per clip); register with `detect=fn(path) -> bool` so `--data PATH` can pick it"),
    # Optional: a run without one (the default) has no adversarial phase.
    Kind("discriminator", "discriminators", ("input_shape",),
         "Discriminator component: trains the VAE adversarially after --adversarial-warmup epochs.",
         "a `keras.Model` mapping x `(batch, H, W, 1)` (normalised, as the decoder makes it) to a list of tensors "
         "`(batch, …)`: feature maps, the patch logits last; used only with `--discriminator NAME` (the adversarial "
         "phase, see [Models](models.md#the-adversarial-phase))"),
    # Several at once (RunConfig.metrics is a comma-separated list of names), so name and plural are one word.
    Kind("metrics", "metrics", (), "Audio metrics to compute at the end of the run, comma-separated.",
         "a callable `(original, reconstructed, sampled, audio, vocoded)` → dict of named numbers (see "
         "[Metrics](metrics.md)); one that also declares a keyword `context` gets a "
         "`vaekit.audio_metrics.MetricContext`; a run uses several, `--metrics A,B`", multiple=True),
)
#: The keyword parameter by which an encoder or decoder build function says it takes a condition.
CONDITION = "condition"


def names() -> tuple[str, ...]:
    """The kinds' names, in :data:`KINDS`' order, read when called (so a kind added to :data:`KINDS` is in them)."""
    return tuple(k.name for k in KINDS)


def unknown(name: str) -> str:
    """What an error says of a kind that is not one: ``unknown kind 'x'; kinds are: …`` (after its ``where:``)."""
    return f"unknown kind {name!r}; kinds are: {', '.join(names())}"


def get(name: str) -> Kind:
    """The kind called ``name``; :class:`vaekit.errors.PluginError` listing the kinds otherwise."""
    from vaekit.errors import PluginError

    for kind in KINDS:
        if kind.name == name:
            return kind
    raise PluginError(f"unknown component kind {name!r}; kinds are: {', '.join(names())}")

