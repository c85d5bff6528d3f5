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
  both have the same value, so their gradients with respect to the discriminator's weights cancel (to
  float rounding), and only x̂ (hence the decoder and encoder) receives gradient.

So the loss the run reports (``loss``) stays the loss component's value, comparable with runs without
a discriminator, and the phase's terms are reported on their own (:data:`TERMS`).

The phase starts at the 0-based epoch ``warmup``, for both networks at once, as in RAVE and
stable-audio-tools: until then the compiled steps do not run the discriminator at all (the model's
``set_epoch`` re-traces them when the phase starts), so the warm-up costs what a run without one costs,
and its terms are 0 and not logged.  The discriminator's weights are variables of the VAE and its Adam
moments variables of the one optimizer: checkpoints keep both, so ``--resume`` replays exactly.
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


def terms(discriminator, phase: Phase, x, x_hat, training=True) -> tuple[dict, object]:
    """The phase's terms for a batch (values, as :data:`TERMS`) and the zero-valued ``carried`` scalar
    whose gradient is the phase's (see the module's docstring)."""
    from keras import ops

    sg = ops.stop_gradient
    # One pass over the three batches stacked (also keeps TensorFlow's graph optimiser from merging two
    # identical passes): the data, x̂ (gradient to the VAE and the discriminator), and the same values
    # stopped (gradient to the discriminator only).
    both = ops.concatenate([ops.cast(t, "float32") for t in (x, x_hat, sg(x_hat))], axis=0)
    real, fake, stopped = zip(*(ops.split(o, 3, axis=0) for o in outputs(discriminator, both, training)))
    d_loss = discriminator_loss(phase.loss, real[-1], stopped[-1])
    g_loss = generator_loss(phase.loss, fake[-1])
    fm = feature_matching(real, fake)
    generator = (phase.weight * (g_loss - generator_loss(phase.loss, stopped[-1]))
                 + phase.feature_weight * (fm - feature_matching(real, stopped)))
    return {"adv_disc": d_loss, "adv_gen": g_loss, "adv_fm": fm}, (d_loss - sg(d_loss)) + generator


def idle(discriminator) -> tuple[dict, object]:
    """What :func:`terms` returns in the warm-up, without running the discriminator: zeros, and a ``carried``
    of 0·Σ mean(w) so that every discriminator weight has a (zero) gradient rather than none (TensorFlow
    warns of variables without gradients)."""
    from keras import ops

    zero = ops.zeros((), "float32")
    carried = 0.0 * ops.sum(ops.stack([ops.cast(ops.mean(w), "float32") for w in discriminator.trainable_weights]))
    return {name: zero for name in TERMS}, carried


def active(model, epoch: int) -> bool:
    """Whether the phase is on in ``epoch`` (0-based) for ``model`` (a VAE; False without a discriminator)."""
    return getattr(model, "discriminator", None) is not None and epoch >= model.phase.warmup


def idle_terms(model, epoch: int) -> set[str]:
    """The epoch metrics of ``model`` that hold no value in ``epoch`` (0-based): the phase's, in its warm-up."""
    if getattr(model, "discriminator", None) is None or active(model, epoch):
        return set()
    return {*TERMS, *(f"val_{t}" for t in TERMS)}
