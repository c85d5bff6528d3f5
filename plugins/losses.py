"""Losses ``mse-kl`` (the notebook's λ·MSE + KL) and ``kl-warmup`` (β rises from 0 to 1).

Reductions as in the notebook: MSE is the mean over pixels and batch; KL is
½·mean over latent dimensions and batch of μ² + σ² − 1 − log σ².
"""

import vaekit


def _mse_and_kl(x, x_hat, z_mean, z_log_var):
    from keras import ops

    mse = ops.mean(ops.square(ops.cast(x, x_hat.dtype) - x_hat))
    kl = 0.5 * ops.mean(ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)
    return ops.cast(mse, "float32"), ops.cast(kl, "float32")


def build_mse_kl(lambda_=500.0):
    """λ·MSE + KL, the notebook's loss."""
    def loss(x, x_hat, z_mean, z_log_var):
        mse, kl = _mse_and_kl(x, x_hat, z_mean, z_log_var)
        return {"loss": lambda_ * mse + kl, "mse": mse, "kl": kl}

    return loss


def build_kl_warmup(lambda_=500.0, warmup_epochs=5):
    """λ·MSE + β·KL, β rising linearly from 0 (first epoch) to 1 over warmup_epochs epochs."""
    def loss(x, x_hat, z_mean, z_log_var, epoch):
        from keras import ops

        mse, kl = _mse_and_kl(x, x_hat, z_mean, z_log_var)
        # β = epoch / warmup_epochs, clipped to [0, 1]; epoch is 0-based, so epoch 0 trains on MSE alone.
        beta = ops.clip(ops.cast(epoch, "float32") / max(warmup_epochs, 1), 0.0, 1.0)
        return {"loss": lambda_ * mse + beta * kl, "mse": mse, "kl": kl, "beta": beta}

    return loss


@vaekit.hookimpl
def register_losses(register):
    # λ weighs the MSE against the KL: negative would reward a bad reconstruction, NaN/inf fail at batch 1.
    register("mse-kl", build_mse_kl, options={"lambda": {"min": 0}})
    register("kl-warmup", build_kl_warmup, options={"lambda": {"min": 0}, "warmup_epochs": {"min": 0}})
