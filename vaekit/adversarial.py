"""The adversarial phase: a discriminator on the normalised mel spectrogram, trained with the VAE.

As in RAVE and stable-audio-tools, after ``warmup`` epochs of the plain VAE loss the decoder is also
pushed to make reconstructions a discriminator cannot tell from the data (a GAN loss, hinge or least
squares) and whose discriminator features match the data's (feature matching, L1).  Off unless a run
names a discriminator (``--discriminator``); then :class:`Phase` holds its settings.

Backend-agnostic, with one ``compute_loss`` and one optimizer over VAE and discriminator weights: no
per-backend ``train_step``, no second optimizer.  :func:`terms` returns, besides the terms' values, one
scalar ``carried`` that the model adds to its loss; it is zero in value and carries exactly these
gradients:

- the discriminator's loss ``L_D`` is computed on ``stop_gradient(x̂)``, so it reaches the discriminator's
  weights only; it enters as ``L_D − stop_gradient(L_D)`` (value 0);
- a generator term ``f`` (the GAN loss on x̂, feature matching) enters as ``f(x̂) − f(stop_gradient(x̂))``:
  both have the same value, so their gradients with respect to the discriminator's weights cancel
  exactly, and only x̂ (hence the decoder and encoder) receives gradient.  It is multiplied by
  ``epoch ≥ warmup`` (0 or 1).

So the loss the run reports (``loss``) stays the loss component's value, comparable with runs without
a discriminator, and the phase's terms are reported on their own (:data:`TERMS`).  The discriminator
trains from the first epoch (it learns to tell the warm-up's reconstructions from the data) and its
gradient reaches the VAE from epoch ``warmup`` on (0-based).  Its weights are variables of the VAE, and
its Adam moments variables of the one optimizer: checkpoints keep both, so ``--resume`` replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

#: GAN losses: ``hinge`` (D: relu(1 − D(x)) + relu(1 + D(x̂)); G: −D(x̂)) and ``lsgan`` (least squares:
#: D: (D(x) − 1)² + D(x̂)²; G: (D(x̂) − 1)²), each a mean over the patch logits.
LOSSES = ("hinge", "lsgan")
#: The terms the phase reports: the discriminator's loss, the generator's GAN loss, feature matching.
TERMS = ("adv_disc", "adv_gen", "adv_fm")


@dataclass(frozen=True)
class Phase:
    """The adversarial phase's settings (``--adversarial-*``)."""

    warmup: int = 5  #: epochs of the plain VAE loss before the discriminator's gradient reaches the VAE
    loss: str = "hinge"  #: one of :data:`LOSSES`
    weight: float = 1.0  #: weight of the generator's GAN loss
    feature_weight: float = 1.0  #: weight of feature matching

    @classmethod
    def from_config(cls, config) -> Phase:
        return cls(config.adversarial_warmup, config.adversarial_loss, config.adversarial_weight,
                   config.adversarial_feature_weight)


def outputs(discriminator, x, training=True) -> list:
    """The discriminator's outputs for ``x`` as a list of float32 tensors: feature maps, the patch logits last."""
    from keras import ops

    out = discriminator(x, training=training)
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    return [ops.cast(o, "float32") for o in out]


def discriminator_loss(kind: str, real, fake):
    """The discriminator's GAN loss on logits of data (``real``) and of reconstructions (``fake``)."""
    from keras import ops

    if kind == "hinge":
        return ops.mean(ops.relu(1.0 - real)) + ops.mean(ops.relu(1.0 + fake))
    return ops.mean(ops.square(real - 1.0)) + ops.mean(ops.square(fake))


def generator_loss(kind: str, fake):
    """The generator's GAN loss on the logits of its reconstructions."""
    from keras import ops

    if kind == "hinge":
        return -ops.mean(fake)
    return ops.mean(ops.square(fake - 1.0))


def feature_matching(real: list, fake: list):
    """Mean over the discriminator's outputs (feature maps and logits) of the mean |real − fake|."""
    from keras import ops

    return ops.mean(ops.stack([ops.mean(ops.abs(r - f)) for r, f in zip(real, fake)]))


def terms(discriminator, phase: Phase, x, x_hat, epoch, training=True) -> tuple[dict, object]:
    """The phase's terms for a batch (values, as :data:`TERMS`) and the zero-valued ``carried`` scalar
    whose gradient is the phase's (see the module's docstring).  ``epoch``: the 0-based epoch, a tensor."""
    from keras import ops

    sg = ops.stop_gradient
    # One pass over the three batches stacked (also keeps TensorFlow's graph optimiser from merging two
    # identical passes): the data, x̂ (gradient to the VAE and the discriminator), and the same values
    # stopped (gradient to the discriminator only).
    both = ops.concatenate([ops.cast(t, "float32") for t in (x, x_hat, sg(x_hat))], axis=0)
    real_out, fake_out, stopped_out = zip(*(ops.split(o, 3, axis=0) for o in outputs(discriminator, both, training)))
    d_loss = discriminator_loss(phase.loss, real_out[-1], stopped_out[-1])
    g_loss = generator_loss(phase.loss, fake_out[-1])
    fm = feature_matching(real_out, fake_out)
    on = ops.cast(ops.greater_equal(ops.cast(epoch, "float32"), float(phase.warmup)), "float32")
    generator = (phase.weight * (g_loss - generator_loss(phase.loss, stopped_out[-1]))
                 + phase.feature_weight * (fm - feature_matching(real_out, stopped_out)))
    carried = (d_loss - sg(d_loss)) + on * generator
    return {"adv_disc": d_loss, "adv_gen": g_loss, "adv_fm": fm}, carried
