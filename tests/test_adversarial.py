"""The adversarial phase (issue 21 item 4): a discriminator trained with the VAE by one optimizer.

Its gradients are checked on both backends against a GAN's two separate steps; its losses by hand;
a run with it resumes exactly (the discriminator and its Adam moments are in the checkpoint).
"""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import in_process, tiny_config


def grad(fn, variables):
    """The gradient of ``fn()`` with respect to ``variables``, on the backend Keras runs."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = fn()
        return [np.zeros(v.shape) if g is None else np.asarray(g)
                for g, v in zip(tape.gradient(value, variables), variables)]
    import jax

    def stateless(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn()

    return [np.asarray(g) for g in jax.grad(stateless)([v.value for v in variables])]

def rel(a, b):
    """The largest difference between two lists of gradients, relative to the largest of ``b``."""
    a, b = np.concatenate([g.ravel() for g in a]), np.concatenate([g.ravel() for g in b])
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0 if not b.any() else 1e-30))


def gradient_check(backend_name: str, gan_loss: str) -> dict:
    """Gradients of the VAE's ``compute_loss`` (what fit minimises) against a GAN's two steps, in warm-up
    (epoch 0: the VAE's loss alone, nothing for the discriminator) and in the phase (epoch 1): the
    discriminator's step (its loss on the reconstructions held fixed) and the generator's step (the VAE's
    loss plus the weighted GAN and feature-matching terms, the discriminator held fixed).  Returns the
    largest differences relative to the reference's largest gradient (absolute where it is 0)."""
    from vaekit import backend

    backend.select(backend_name)
    import keras
    import numpy as np
    from keras import ops

    from vaekit import adversarial
    from vaekit.default_plugins import dense, discriminators, losses
    from vaekit.model import VAE

    keras.utils.set_random_seed(0)
    shape = (16, 12, 1)
    disc = discriminators.build_patch(shape, filters=4, layers=2)
    vae = VAE(dense.build_encoder(shape, 4, units=16), dense.build_decoder(4, shape, units=16), seed=0,
              discriminator=disc)
    phase = adversarial.Phase(warmup=1, loss=gan_loss, weight=5.0, feature_weight=10.0)
    vae.phase = phase
    x = np.random.default_rng(0).uniform(size=(8, *shape)).astype("float32")
    loss_fn = losses.build_mse_kl()
    vae.set_loss(loss_fn, x[:2])
    vae(x[:1])
    d_vars = list(disc.trainable_variables)
    v_vars = list(vae.encoder.trainable_variables) + list(vae.decoder.trainable_variables)

    def forward():  # z = μ: no sampling noise, so every call sees the same x̂
        z_mean, z_log_var = vae.encoder(x)
        return vae.decoder(z_mean), z_mean, z_log_var

    def model_loss():
        return vae.compute_loss(x, None, forward(), training=True)

    def vae_loss():
        return loss_fn(x, *forward())["loss"]

    def disc_step():
        real = adversarial.outputs(disc, x)
        fake = adversarial.outputs(disc, ops.stop_gradient(forward()[0]))
        return adversarial.discriminator_loss(gan_loss, real[-1], fake[-1])

    def generator_step(on):
        x_hat, z_mean, z_log_var = forward()
        real, fake = adversarial.outputs(disc, x), adversarial.outputs(disc, x_hat)
        adv = phase.weight * adversarial.generator_loss(gan_loss, fake[-1])
        fm = phase.feature_weight * adversarial.feature_matching(real, fake)
        return loss_fn(x, x_hat, z_mean, z_log_var)["loss"] + on * (adv + fm)

    out = {}
    for epoch in (0, 1):
        vae.set_epoch(epoch)
        out[f"disc_{epoch}"] = rel(grad(model_loss, d_vars), grad(lambda: float(epoch) * disc_step(), d_vars))
        out[f"vae_{epoch}"] = rel(grad(model_loss, v_vars), grad(lambda: generator_step(float(epoch)), v_vars))
        # The phase moves the VAE's gradient in the phase (else the check above proves nothing).
        out[f"phase_share_{epoch}"] = rel(grad(lambda: generator_step(1.0), v_vars), grad(vae_loss, v_vars))
        out[f"loss_{epoch}"] = float(model_loss()) - float(vae_loss())
    return out


@pytest.mark.parametrize("backend_name,gan_loss", [("tensorflow", "hinge"), ("jax", "lsgan")])
def test_one_loss_and_one_optimizer_give_each_network_exactly_its_own_gan_gradient(backend_name, gan_loss):
    """The discriminator's weights get the gradient of its own loss only (the generator terms' cancel);
    the VAE's get its loss plus the phase's terms (from epoch ``warmup`` on), never the discriminator's;
    the loss's value is the loss component's."""
    if backend_name == "jax" and os.environ.get("CI") is None:
        pytest.importorskip("jax")
    code = "import numpy as np\n\n" + "\n".join(inspect.getsource(f) for f in (grad, rel, gradient_check)) + (
        f"\nimport json\nprint(json.dumps(gradient_check({backend_name!r}, {gan_loss!r})))\n")
    out = json.loads(in_process(code).strip().splitlines()[-1])
    for epoch in (0, 1):
        assert out[f"disc_{epoch}"] < 1e-4, out  # float rounding: ~3e-6 seen
        assert out[f"vae_{epoch}"] < 1e-4, out
        assert abs(out[f"loss_{epoch}"]) < 1e-6, out
        assert out[f"phase_share_{epoch}"] > 1e-3, out  # the GAN terms are not negligible here


def test_gan_losses_and_feature_matching_by_hand():
    from vaekit.adversarial import discriminator_loss, feature_matching, generator_loss

    real, fake = np.array([2.0, 0.5], "float32"), np.array([-2.0, 0.3], "float32")
    # hinge: mean(relu(1 − real)) + mean(relu(1 + fake)) = (0 + 0.5)/2 + (0 + 1.3)/2
    assert float(discriminator_loss("hinge", real, fake)) == pytest.approx(0.9)
    assert float(generator_loss("hinge", fake)) == pytest.approx(0.85)  # −mean(fake)
    # least squares: mean((real − 1)²) + mean(fake²) = (1 + 0.25)/2 + (4 + 0.09)/2
    assert float(discriminator_loss("lsgan", real, fake)) == pytest.approx(2.67)
    assert float(generator_loss("lsgan", fake)) == pytest.approx((9 + 0.49) / 2)  # mean((fake − 1)²)
    # mean over outputs of mean |r − f|: (|1 − 0| + |2 − 4|)/2 = 1.5 for the first, 0.5 for the second
    a, b = [np.array([1.0, 2.0], "float32"), np.array([0.0], "float32")], [np.zeros(2, "float32"), np.array([0.5], "float32")]
    assert float(feature_matching(a, [np.array([0.0, 4.0], "float32"), b[1]])) == pytest.approx((1.5 + 0.5) / 2)


#: Settings of the small adversarial runs: the phase starts at the second epoch (0-based epoch 1).
ADVERSARIAL = dict(epochs=3, discriminator="patch", adversarial_warmup=1, checkpoint_interval=0.0,
                   options={"vocoder": {"n_iter": 4}, "discriminator": {"filters": 8, "layers": 2}})
PHASE_METRICS = ("loss", "val_loss", "adv_disc", "adv_gen", "adv_fm", "val_adv_disc")


def test_a_run_with_a_discriminator_stopped_mid_phase_resumes_exactly(notebook_data, store, monkeypatch):
    """The checkpoint holds the discriminator's weights and its Adam moments: a run that failed after its
    second epoch (in the phase), resumed, logs the third epoch and test metrics of an uninterrupted run."""
    from vaekit import training
    from vaekit.checkpoint import resume_config
    from vaekit.commands.run import run

    whole = run(tiny_config(notebook_data, store, **ADVERSARIAL), progress=False)
    logger_end = training.EpochLogger.on_epoch_end

    def fail_after_second_epoch(self, epoch, logs=None):
        if epoch == 1:  # its checkpoint is written (interval 0), its metrics are not logged yet
            raise RuntimeError("stopped after epoch 2")
        logger_end(self, epoch, logs)

    monkeypatch.setattr(training.EpochLogger, "on_epoch_end", fail_after_second_epoch)
    with pytest.raises(RuntimeError, match="stopped after epoch 2"):
        run(tiny_config(notebook_data, store, **ADVERSARIAL), progress=False)
    monkeypatch.setattr(training.EpochLogger, "on_epoch_end", logger_end)
    client = MlflowClient(store)
    [failed] = client.search_runs([whole.experiment_id], "attributes.status = 'FAILED'")
    run_id = failed.info.run_id
    resumed = run(resume_config(run_id, store), progress=False, resume=run_id)
    assert client.get_run(run_id).data.tags["vaekit.resumed_from_epoch"] == "2"
    for key in PHASE_METRICS:
        got = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        want = sorted(client.get_metric_history(whole.run_id, key), key=lambda m: m.step)
        # The phase's terms from its first epoch (1) on: not logged in the warm-up, where they are 0.
        assert [m.step for m in got] == ([1, 2] if "adv" in key else [0, 1, 2]), key
        np.testing.assert_allclose([m.value for m in got], [m.value for m in want], rtol=1e-5, err_msg=key)
    # The phase ran in training (its step re-traced when it started): a discriminator's hinge loss is ~2 at chance.
    assert all(m.value > 1 for m in client.get_metric_history(run_id, "adv_disc")), "the training step ran no discriminator"
    for key in ("test_loss", "test_mse", "test_adv_disc", "test_adv_gen", "test_adv_fm"):
        assert resumed.metrics[key] == pytest.approx(whole.metrics[key], rel=1e-5), key


def test_the_phase_s_settings_are_checked_before_a_run_starts():
    from vaekit.components import resolve
    from vaekit.config import RunConfig, build_config
    from vaekit.errors import ConfigError, PluginError

    with pytest.raises(ConfigError, match=r"^--adversarial-warmup must be below --epochs \(3\): the adversarial "
                                          r"phase would never start, got 3$"):
        build_config(discriminator="patch", epochs=3, adversarial_warmup=3)
    build_config(epochs=3, adversarial_warmup=3)  # without a discriminator the setting is idle
    with pytest.raises(ConfigError, match=r"^--adversarial-loss 'wgan': must be one of hinge, lsgan$"):
        build_config(discriminator="patch", adversarial_loss="wgan")
    with pytest.raises(PluginError, match=r"^--option discriminator.filters: the run has no discriminator "
                                          r"\(name one with --discriminator NAME\)$"):
        resolve(RunConfig(options={"discriminator": {"filters": 8}}))
    with pytest.raises(PluginError, match=r"^unknown discriminator 'nope'; available: patch"):
        resolve(RunConfig(discriminator="nope"))
    assert resolve(RunConfig())["discriminator"] is None
    with pytest.raises(ConfigError, match=r"^--monitor val_adv_fm: a term of the adversarial phase, 0 during its warm-up"):
        from vaekit.training import check_monitor

        check_monitor(build_config(discriminator="patch", early_stop=2, monitor="val_adv_fm"), ["loss", "adv_fm"])
    # A run without the phase has no such term; a typo's list offers only what --monitor may watch.
    with pytest.raises(ConfigError, match=r"^--monitor adv_fm: not an epoch metric of this run; choose one of loss, val_loss$"):
        check_monitor(build_config(early_stop=2, monitor="adv_fm"), ["loss"])
    with pytest.raises(ConfigError, match=r"^--monitor los: not an epoch metric of this run; choose one of loss, val_loss$"):
        check_monitor(build_config(discriminator="patch", early_stop=2, monitor="los"), ["loss", "adv_fm"])
