"""The hooks a vaekit plugin can implement.

Each hook receives a ``register`` callable; the plugin calls ``register(name, build)``
once per component it provides.  ``build`` is called lazily, only for the component a
run actually uses, so a plugin module should import heavy libraries (Keras, a backend)
inside ``build``, not at module level: Keras reads its backend once, when first imported.
The contract of each kind's ``build`` is in :mod:`vaekit.components` and in
docs/components.md; each hook here is one record of :data:`vaekit.kinds.KINDS` (a test
checks they match one to one).
"""

import pluggy

hookspec = pluggy.HookspecMarker("vaekit")


@hookspec
def register_encoders(register):
    """Register encoders: ``build(input_shape, latent_dim, **options)`` → keras.Model x → (z_mean, z_log_var).

    A build function that declares ``condition=None`` takes a condition: ``[x, label one-hot]`` → (z_mean, z_log_var).
    """


@hookspec
def register_decoders(register):
    """Register decoders: ``build(latent_dim, output_shape, **options)`` → keras.Model z → x̂.

    A build function that declares ``condition=None`` takes a condition: ``[z, label one-hot]`` → x̂.
    """


@hookspec
def register_losses(register):
    """Register losses: ``build(**options)`` → callable (x, x_hat, z_mean, z_log_var[, epoch]) → dict of terms with ``loss``."""


@hookspec
def register_vocoders(register):
    """Register vocoders: ``build(audio, **options)`` → callable mel dB (N, n_mels, frames) → waveforms (N, samples)."""


@hookspec
def register_datasets(register):
    """Register datasets: ``build(path, audio, **options)`` → :class:`vaekit.data.Dataset`; optional ``detect=fn(path)``."""


@hookspec
def register_discriminators(register):
    """Register discriminators: ``build(input_shape, **options)`` → keras.Model x → list of feature maps, the patch logits last.

    See :mod:`vaekit.adversarial` for how the adversarial phase uses them.
    """


@hookspec
def register_metrics(register):
    """Register metrics: ``build(**options)`` → callable (original, reconstructed, sampled, audio, vocoded) → dict of named numbers.

    See :mod:`vaekit.audio_metrics` for what each argument holds; a callable that also declares a keyword
    parameter ``context`` gets a :class:`vaekit.audio_metrics.MetricContext` (e.g. the original audio).
    """
