"""Encoder and decoder ``conv2``: the notebook's convolutional VAE, layer for layer.

Encoder: Conv2D(40, 3×3, relu) → AvgPool 2×2 → Conv2D(25, 3×3, relu) → AvgPool 2×2 →
Flatten → Dense(800, relu) → Dense(60, relu) → Dense(d) μ and Dense(d) log σ².
Decoder: the mirror image, ending in Conv2DTranspose(1, 3×3, relu).
At 50×50 and d = 20: encoder 2,480,725 parameters, decoder 2,482,486.

Conditional (``condition=K``, a run with ``--condition``): the label's one-hot is concatenated to the
flattened features before Dense(dense1) in the encoder and to z before Dense(dense2) in the decoder;
without ``condition`` the networks are exactly the notebook's.
"""

import vaekit


def _grid(size: int, axis: str) -> int:
    """Side length after conv 3×3 → pool 2 → conv 3×3 → pool 2, if the decoder can undo it exactly."""
    after_first = size - 2
    after_second = after_first // 2 - 2
    if size < 10 or after_first % 2 or after_second % 2:
        ok = [n for n in range(10, 200) if (n - 2) % 2 == 0 and ((n - 2) // 2 - 2) % 2 == 0]
        near = sorted(ok, key=lambda n: abs(n - size))[:2]
        from vaekit.errors import ShapeError

        raise ShapeError(
            f"conv2 cannot take a spectrogram {axis} of {size}: it needs a size n ≥ 10 with n ≡ 2 (mod 4) "
            f"so the decoder mirrors the encoder exactly (nearest: {', '.join(map(str, sorted(near)))})"
        )
    return after_second // 2


def build_encoder(input_shape, latent_dim, filters1=40, filters2=25, dense1=800, dense2=60, condition=None):
    """The notebook's conv encoder: Conv2D(filters1) → pool → Conv2D(filters2) → pool → Dense(dense1, dense2) → μ, log σ²."""
    import keras
    from keras import layers

    h, w = _grid(input_shape[0], "height (mel bands)"), _grid(input_shape[1], "width (frames)")
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Conv2D(filters1, (3, 3), activation="relu")(inputs)  # (48, 48, 40)
    x = layers.AveragePooling2D((2, 2))(x)  # (24, 24, 40)
    x = layers.Conv2D(filters2, (3, 3), activation="relu")(x)  # (22, 22, 25)
    x = layers.AveragePooling2D((2, 2))(x)  # (11, 11, 25)
    assert x.shape[1:3] == (h, w)
    x = layers.Flatten()(x)  # 3025
    if condition:
        label = keras.Input(shape=(condition,), name="label")
        x = layers.Concatenate(name="with_label")([x, label])
    x = layers.Dense(dense1, activation="relu")(x)
    x = layers.Dense(dense2, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="dense_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="dense_log_std")(x)
    return keras.Model([inputs, label] if condition else inputs, [z_mean, z_log_var], name="conv2_encoder")


def build_decoder(latent_dim, output_shape, filters1=40, filters2=25, dense1=800, dense2=60, condition=None):
    """The encoder's mirror image: Dense(dense2, dense1) → reshape → upsample + Conv2DTranspose → x̂ (ReLU)."""
    import keras
    from keras import layers

    h, w = _grid(output_shape[0], "height (mel bands)"), _grid(output_shape[1], "width (frames)")
    inputs = keras.Input(shape=(latent_dim,))
    x = inputs
    if condition:
        label = keras.Input(shape=(condition,), name="label")
        x = layers.Concatenate(name="with_label")([x, label])
    x = layers.Dense(dense2, activation="relu")(x)
    x = layers.Dense(dense1, activation="relu")(x)
    x = layers.Dense(h * w * filters2, activation="relu")(x)
    x = layers.Reshape((h, w, filters2))(x)  # (11, 11, 25)
    x = layers.UpSampling2D((2, 2))(x)  # (22, 22, 25)
    x = layers.Conv2DTranspose(filters1, (3, 3), activation="relu")(x)  # (24, 24, 40)
    x = layers.UpSampling2D((2, 2))(x)  # (48, 48, 40)
    outputs = layers.Conv2DTranspose(output_shape[-1], (3, 3), activation="relu")(x)  # (50, 50, 1)
    return keras.Model([inputs, label] if condition else inputs, outputs, name="conv2_decoder")


#: Layer widths: at least one unit; the upper bounds are far above any size that fits a GPU's memory
#: at 50×50 (Dense(dense1) after the convolutions alone holds 3025·dense1 weights).
CONV2_RANGES = {"filters1": {"min": 1, "max": 4096}, "filters2": {"min": 1, "max": 4096},
                "dense1": {"min": 1, "max": 1_000_000}, "dense2": {"min": 1, "max": 1_000_000}}


@vaekit.hookimpl
def register_encoders(register):
    register("conv2", build_encoder, options=CONV2_RANGES)


@vaekit.hookimpl
def register_decoders(register):
    register("conv2", build_decoder, options=CONV2_RANGES)
