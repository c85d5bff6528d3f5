"""vaekit plugin ``conv1d``: an encoder/decoder pair that convolves over time frames.

A mel spectrogram x of shape (n_mels, frames, 1) is read as a sequence of ``frames`` vectors
of ``n_mels`` values: Conv1D layers slide along time, with the mel bands as channels.  Only
built-in Keras layers are used, so a logged model loads without this package installed.
"""

import vaekit

__version__ = "0.1.0"


def build_encoder(input_shape, latent_dim, filters=64, kernel_size=5, layers=2):
    """Conv1D over time frames (mel bands as channels) → Dense μ and log σ²."""
    import keras

    n_mels, frames = input_shape[0], input_shape[1]
    x_in = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Reshape((n_mels, frames))(x_in)
    x = keras.layers.Permute((2, 1))(x)  # (frames, n_mels): time first
    for _ in range(layers):
        x = keras.layers.Conv1D(filters, kernel_size, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(x_in, [z_mean, z_log_var], name="conv1d_encoder")


def build_decoder(latent_dim, output_shape, filters=64, kernel_size=5, layers=2):
    """Dense to (frames, filters) → Conv1D over time → n_mels sigmoid channels → (n_mels, frames, 1)."""
    import keras

    n_mels, frames = output_shape[0], output_shape[1]
    z = keras.Input(shape=(latent_dim,))
    x = keras.layers.Dense(frames * filters, activation="relu")(z)
    x = keras.layers.Reshape((frames, filters))(x)
    for _ in range(layers - 1):
        x = keras.layers.Conv1D(filters, kernel_size, padding="same", activation="relu")(x)
    x = keras.layers.Conv1D(n_mels, kernel_size, padding="same", activation="sigmoid")(x)
    x = keras.layers.Permute((2, 1))(x)  # back to (n_mels, frames)
    x_hat = keras.layers.Reshape(tuple(output_shape))(x)
    return keras.Model(z, x_hat, name="conv1d_decoder")


@vaekit.hookimpl
def register_encoders(register):
    register("conv1d", build_encoder)


@vaekit.hookimpl
def register_decoders(register):
    register("conv1d", build_decoder)
