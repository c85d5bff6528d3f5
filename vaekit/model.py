"""The VAE model: encoder → Sampling → decoder, trained with a plugin loss, on any Keras backend.

Backend-agnostic Keras 3: ``keras`` and ``keras.ops`` only.  A serializable :class:`Sampling`
layer (no ``Lambda``, so saved models load with ``safe_mode``) draws ε with a
``keras.random.SeedGenerator``; :meth:`VAE.compute_loss` runs the plugin loss on Keras' own
``train_step``/``test_step`` of every backend.  The loss is not saved with the model: a loaded
VAE can encode, sample and decode, not train (resuming re-attaches it, see :meth:`VAE.set_loss`).

Reporting the loss's terms: ``loss`` goes through Keras' own loss tracker; every other term
goes into one :class:`TermsMean`, a single variable ``[Σ term·n …, Σ n]`` updated once per step,
rather than a ``keras.metrics.Mean`` (two variables) per term: on a GPU each metric variable is
state threaded through every step (see ``benchmarks/gpu.sh``).  Epoch means are over samples,
as Keras weights its loss.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

from vaekit import adversarial, backend
from vaekit.errors import PluginError, ShapeError, one_line

backend.keep_tensorflow_out()


@keras.saving.register_keras_serializable(package="vaekit")
class Sampling(keras.layers.Layer):
    """z = μ + exp(½·log σ²)·ε, ε ~ N(0, I): the reparameterisation trick."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        eps = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class TermsMean(keras.metrics.Metric):
    """Sample-weighted running means of several scalars, kept in one variable ``[Σ v·n …, Σ n]``."""

    def __init__(self, names, name="terms", **kwargs):
        super().__init__(name=name, **kwargs)
        self.names = list(names)
        self.state = self.add_variable(shape=(len(self.names) + 1,), initializer="zeros", name="state",
                                       dtype="float32")

    def update_state(self, values, n):
        n = ops.cast(n, "float32")
        self.state.assign_add(ops.concatenate([ops.stack(values) * n, ops.reshape(n, (1,))]))

    def result(self):
        count = ops.maximum(self.state[-1], 1.0)
        return {name: self.state[i] / count for i, name in enumerate(self.names)}

    def reset_state(self):
        self.state.assign(ops.zeros(self.state.shape, dtype="float32"))

    def get_config(self):
        return {"names": self.names, "name": self.name}


def one_hot(labels, classes: int) -> np.ndarray:
    """Class indices (N,) → one-hot rows (N, classes), float32; rows (N, classes) (a mix of classes) pass as they are."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype("float32")
    return np.eye(classes, dtype="float32")[labels.astype(np.int64)]


@keras.saving.register_keras_serializable(package="vaekit")
class VAE(keras.Model):
    """A variational autoencoder around a plugin encoder and decoder.

    ``encoder`` maps x to ``(z_mean, z_log_var)``; ``decoder`` maps z to x̂.  ``VAE(x)`` is x̂
    (z sampled); in training and evaluation :meth:`call` also returns the latent statistics the
    loss needs.  Call :meth:`set_loss` before ``compile``/``fit``.  Metrics are the loss's terms.

    A conditional VAE (``classes`` > 0) takes ``(x, label)``, the label one-hot ``(batch, classes)``, and
    hands the label to both: ``encoder([x, label])``, ``decoder([z, label])``.
    """

    def __init__(self, encoder, decoder, seed=None, discriminator=None, classes=0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        #: The adversarial phase's discriminator (None: no phase); its weights are the VAE's variables, so
        #: the one optimizer trains them and checkpoints keep them.  :attr:`phase` holds the phase's settings.
        self.discriminator = discriminator
        self.phase = adversarial.Phase() if discriminator is not None else None
        # Whether the traced steps run the discriminator: a Python flag, fixed when a step is traced, so the
        # warm-up's steps do not compute it at all (set_epoch re-traces them when the phase starts).
        self._phase_on = False
        self.seed = seed
        #: The condition's number of classes; 0: unconditional.
        self.classes = int(classes or 0)
        self.sampling = Sampling(seed=seed, name="sampling")
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        # Training progress for losses that schedule terms (e.g. KL warm-up); set per epoch.  A Keras
        # variable, so it is state of the compiled step on every backend (a JAX step would bake in a constant).
        self.epoch = self.add_weight(shape=(), initializer="zeros", trainable=False, name="epoch", dtype="float32")
        self.loss_fn = None
        #: Multiplies the optimised loss: 1 / replicas under tf.distribute, which sums replicas' gradients.
        self.loss_scale = 1.0
        self.terms = None
        self._loss_takes_epoch = False
        self._with_latents = False

    # -- contract --------------------------------------------------------------------
    def set_loss(self, loss_fn, sample_batch) -> list[str]:
        """Attach a plugin loss; probe it once on ``sample_batch`` to learn its term names.

        Raises :class:`PluginError` if it does not return a dict of scalars with ``"loss"``.
        """
        self.loss_fn = loss_fn
        try:
            params = inspect.signature(loss_fn).parameters
            self._loss_takes_epoch = "epoch" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._loss_takes_epoch = False
        sample_batch = tuple(map(ops.convert_to_tensor, sample_batch)) if self.classes else ops.convert_to_tensor(sample_batch)
        outputs = self.call(sample_batch, training=False, latents=True)
        x = sample_batch[0] if self.classes else sample_batch
        terms = self.loss_terms(x, outputs)
        if not isinstance(terms, dict) or "loss" not in terms:
            got = sorted(terms) if isinstance(terms, dict) else type(terms).__name__
            raise PluginError(f"the loss must return a dict of scalar terms including 'loss', got {got}")
        for name, value in terms.items():
            if len(ops.shape(value)) != 0:
                raise PluginError(f"loss term {name!r} must be a scalar, got shape {tuple(ops.shape(value))}")
        phase = list(adversarial.TERMS) if self.discriminator is not None else []
        self.terms = TermsMean([name for name in terms if name != "loss"] + phase, name="terms")
        return [*terms, *phase]

    def loss_terms(self, x, outputs) -> dict:
        """The plugin loss's terms for a batch ``x`` and the model's ``(x̂, μ, log σ²)``, in float32."""
        x_hat, z_mean, z_log_var = outputs
        # Under a mixed-precision policy the layers compute in float16/bfloat16; the loss is float32.
        x, x_hat, z_mean, z_log_var = (ops.cast(t, "float32") for t in (x, x_hat, z_mean, z_log_var))
        if self._loss_takes_epoch:
            terms = self.loss_fn(x, x_hat, z_mean, z_log_var, epoch=ops.convert_to_tensor(self.epoch))
        else:
            terms = self.loss_fn(x, x_hat, z_mean, z_log_var)
        if isinstance(terms, dict):
            terms = {k: ops.cast(v, "float32") for k, v in terms.items()}
        return terms

    # -- keras -----------------------------------------------------------------------
    def call(self, x, training=False, latents=None):
        if self.classes:
            x, label = x
            z_mean, z_log_var = self.encoder([x, label], training=training)
            x_hat = self.decoder([self.sampling([z_mean, z_log_var]), label], training=training)
        else:
            z_mean, z_log_var = self.encoder(x, training=training)
            x_hat = self.decoder(self.sampling([z_mean, z_log_var]), training=training)
        # fit/evaluate set _with_latents (a Python flag, fixed when the step is traced): the loss needs μ, log σ².
        return (x_hat, z_mean, z_log_var) if (self._with_latents if latents is None else latents) else x_hat

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.classes:
            x = x[0]  # (x, label): the loss compares spectrograms
        terms = self.loss_terms(x, y_pred)
        loss = terms["loss"]
        if self.discriminator is not None:
            # Zero-valued, with the phase's gradients (vaekit.adversarial): `loss` stays the loss component's.
            adv, carried = (adversarial.terms(self.discriminator, self.phase, x, y_pred[0], training)
                            if self._phase_on else adversarial.idle(self.discriminator))
            terms, loss = {**terms, **adv}, loss + carried
        others = [terms[name] for name in self.terms.names]
        if others:
            self.terms.update_state(others, ops.shape(x)[0])
        return loss * self.loss_scale

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the (0-based) epoch it trains or evaluates in: the ``epoch`` variable losses read,
        and the adversarial phase, whose start re-traces the compiled steps (between epochs, once a run)."""
        self.epoch.assign(float(epoch))
        on = adversarial.active(self, epoch)
        if on != self._phase_on:
            self._phase_on = on
            if self.train_function is not None:
                self.make_train_function(force=True)
            self.test_function = None

    def fit(self, *args, **kwargs):
        with self._latents():
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with self._latents():
            return super().evaluate(*args, **kwargs)

    def _latents(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            # Re-entrant: fit calls evaluate for the validation data, and must keep the flag after it.
            previous, self._with_latents = self._with_latents, True
            try:
                yield
            finally:
                self._with_latents = previous

        return scope()

    def load_own_variables(self, store):
        # Models saved before the epoch variable existed have no variable of the VAE's own.
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    # -- generation ------------------------------------------------------------------
    def inputs_for(self, first, labels=None):
        """The encoder's or decoder's input for ``first`` (x or z): ``first`` itself, or ``[first, one-hot]``
        for a conditional VAE (``labels``: class indices (N,) or rows (N, classes)).  A label for an
        unconditional VAE, or none for a conditional one, is a :class:`ValueError` (a caller's bug)."""
        if not self.classes:
            if labels is not None:
                raise ValueError("this VAE is unconditional: it takes no label")
            return first
        if labels is None:
            raise ValueError(f"this VAE is conditional ({self.classes} classes): it needs a label per row")
        return [first, one_hot(labels, self.classes)]

    def encode(self, x, labels=None):
        """x → (z_mean, z_log_var) as NumPy arrays (a conditional VAE: with each row's label, see :meth:`inputs_for`)."""
        z_mean, z_log_var = self.encoder.predict(self.inputs_for(x, labels), verbose=0)
        return np.asarray(z_mean, dtype="float32"), np.asarray(z_log_var, dtype="float32")

    def decode(self, z, labels=None):
        """z → x̂ as a NumPy array (a conditional VAE: with each row's label, see :meth:`inputs_for`)."""
        return np.asarray(self.decoder.predict(self.inputs_for(z, labels), verbose=0), dtype="float32")

    def get_config(self):
        config = {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
        }
        if self.classes:  # an unconditional VAE's config stays as it was
            config["classes"] = self.classes
        if self.discriminator is not None:
            config["discriminator"] = keras.saving.serialize_keras_object(self.discriminator)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        if config.get("discriminator") is not None:
            config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(encoder, decoder, **config)


def sample_latent(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """z ~ N(0, I), seeded (the same draws on every backend)."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype("float32")


def sample_labels(n: int, classes: int) -> np.ndarray:
    """The classes a conditional run's samples are drawn with: sample i has class i mod ``classes`` (each in turn)."""
    return np.arange(n) % classes


def condition_classes(config, ds) -> list[str]:
    """The classes of the run's ``--condition`` label (``[]`` for an unconditional run)."""
    return list(ds.labels[config.condition].classes) if getattr(config, "condition", None) else []


def model_inputs(config, ds, split: str, rows=slice(None)):
    """What the VAE takes for ``ds``'s ``split`` (``train`` or ``test``), rows ``rows``: x (N, H, W, 1), or
    ``(x, label one-hot)`` for a conditional run."""
    x = getattr(ds, f"x_{split}")[rows][..., None]
    classes = condition_classes(config, ds)
    if not classes:
        return x
    return x, one_hot(getattr(ds.labels[config.condition], split)[rows], len(classes))


def build_vae(config, comps, ds):
    """Build encoder, decoder and loss for the data; check their shapes against the contract.

    Returns ``(vae, term names)``; the VAE is built (it has its weights) but not compiled.  A conditional
    run (``config.condition``) builds them with ``condition=K``, the label's number of classes.
    """
    x_shape = (*ds.shape, 1)
    d = config.latent_dim
    k = len(condition_classes(config, ds)) or None
    encoder = _create_for_data(comps["encoder"], ds, x_shape, d, condition=k, **config.option("encoder"))
    decoder = _create_for_data(comps["decoder"], ds, d, x_shape, condition=k, **config.option("decoder"))
    check_model_shapes(encoder, decoder, comps, x_shape, d, k)
    discriminator = None
    if comps.get("discriminator") is not None:
        discriminator = _create_for_data(comps["discriminator"], ds, x_shape, **config.option("discriminator"))
        check_discriminator(discriminator, comps["discriminator"], x_shape)
    model = VAE(encoder, decoder, seed=config.seed, discriminator=discriminator, classes=k, name="vae")
    if discriminator is not None:
        model.phase = adversarial.Phase.from_config(config)
    loss = comps["loss"]
    loss_fn = loss.create(**config.option("loss"))
    try:
        terms = model.set_loss(loss_fn, model_inputs(config, ds, "train", slice(0, 2)))
    except PluginError as exc:
        raise PluginError(f"loss {loss.name!r} (from {loss.plugin}): {exc}") from None
    except Exception as exc:
        raise PluginError(f"loss {loss.name!r} (from {loss.plugin}) failed on a batch: {one_line(exc)}") from None
    model(model_inputs(config, ds, "train", slice(0, 1)))  # build, so the saved model has its weights
    return model, terms


def _create_for_data(comp, ds, *args, **options):
    """``comp.create``; a :class:`ShapeError` (the data's size does not fit) also names the data."""
    try:
        return comp.create(*args, **options)
    except ShapeError as exc:
        raise ShapeError(f"{ds.source or 'the dataset'}: {ds.shape[0]}×{ds.shape[1]} spectrograms do not fit "
                         f"{comp.kind} {comp.name!r} (from {comp.plugin}): {exc}") from None


def check_model_shapes(encoder, decoder, comps, x_shape, d: int, classes: int | None = None) -> None:
    """Raise :class:`PluginError` (expected vs got) if encoder or decoder break the contract
    (with ``classes``: the conditional one, a one-hot label ``(batch, classes)`` as second input)."""
    enc, dec = comps["encoder"], comps["decoder"]
    for comp, model in ((enc, encoder), (dec, decoder)):
        if not isinstance(model, keras.Model):
            raise PluginError(f"{comp.kind} {comp.name!r} (from {comp.plugin}) must return a keras.Model, got {type(model).__name__}")
    x = np.zeros((2, *x_shape), dtype="float32")
    label = one_hot(np.zeros(2), classes) if classes else None
    with_label = (lambda first: [first, label]) if classes else (lambda first: first)
    also = f" and a label of shape {label.shape}" if classes else ""
    try:
        out = encoder(with_label(x))
    except Exception as exc:
        raise PluginError(f"encoder {enc.name!r} (from {enc.plugin}) fails on input of shape {x.shape}{also}: {one_line(exc)}; "
                          "its keras.Input must have shape=input_shape" + (" and a second input (condition,)" if classes else "")) from None
    got = [tuple(o.shape) for o in out] if isinstance(out, (list, tuple)) else [tuple(out.shape)]
    if got != [(2, d), (2, d)]:
        raise PluginError(
            f"encoder {enc.name!r} (from {enc.plugin}): expected outputs (z_mean, z_log_var) "
            f"of shapes [(batch, {d}), (batch, {d})], got {got} for a batch of 2"
        )
    try:
        y = decoder(with_label(np.zeros((2, d), dtype="float32")))
    except Exception as exc:
        raise PluginError(f"decoder {dec.name!r} (from {dec.plugin}) fails on z of shape (2, {d}){also}: {one_line(exc)}") from None
    got_y = [tuple(o.shape) for o in y] if isinstance(y, (list, tuple)) else tuple(y.shape)
    if got_y != (2, *x_shape):
        raise PluginError(
            f"decoder {dec.name!r} (from {dec.plugin}): expected output of shape "
            f"(batch, {', '.join(map(str, x_shape))}), got {got_y} for a batch of 2"
        )


def check_discriminator(discriminator, comp, x_shape) -> None:
    """Raise :class:`PluginError` unless the discriminator is a keras.Model mapping a batch of spectrograms to
    a list of batched tensors (feature maps, the patch logits last)."""
    where = f"discriminator {comp.name!r} (from {comp.plugin})"
    if not isinstance(discriminator, keras.Model):
        raise PluginError(f"{where} must return a keras.Model, got {type(discriminator).__name__}")
    x = np.zeros((2, *x_shape), dtype="float32")
    try:
        out = discriminator(x)
    except Exception as exc:
        raise PluginError(f"{where} fails on input of shape {x.shape}: {one_line(exc)}; "
                          "its keras.Input must have shape=input_shape") from None
    shapes = [tuple(o.shape) for o in out] if isinstance(out, (list, tuple)) else [tuple(out.shape)]
    if not shapes or any(len(s) < 2 or s[0] != 2 for s in shapes):
        raise PluginError(f"{where}: expected a list of tensors (batch, ...), the patch logits last, got shapes "
                          f"{shapes} for a batch of 2")
