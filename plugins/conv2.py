"""Encoder and decoder ``conv2``: the notebook's convolutional VAE, layer for layer.

Encoder: Conv2D(40, 3×3, relu) → AvgPool 2×2 → Conv2D(25, 3×3, relu) → AvgPool 2×2 →
Flatten → Dense(800, relu) → Dense(60, relu) → Dense(d) μ and Dense(d) log σ².
Decoder: the mirror image, ending in Conv2DTranspose(1, 3×3, relu).
At 50×50 and d = 20: encoder 2,480,725 parameters, decoder 2,482,486.

Any H×W of at least 10×10: the decoder mirrors the encoder exactly only for sizes n ≡ 2 (mod 4)
(50 included), so other sizes are zero-padded at the end (bottom rows, last frames) up to the next such
size before the first convolution, and the decoder's output is cropped back to H×W.  At sizes
n ≡ 2 (mod 4) there is no padding and no cropping: the model is layer for layer the notebook's.

Conditional (``condition=K``, a run with ``--condition``): the label's one-hot is concatenated to the
flattened features before Dense(dense1) in the encoder and to z before Dense(dense2) in the decoder;
without ``condition`` the networks are exactly the notebook's.
"""

import vaekit

#: The smallest side conv2 takes: 3×3 conv → pool 2 → 3×3 conv → pool 2 must leave at least one cell.
MIN_SIZE = 10


def _padded(size: int) -> int:
    """The smallest n ≥ ``size`` with n ≡ 2 (mod 4): the sizes the decoder's upsampling mirrors exactly."""
    return size + (2 - size) % 4


def _grid(size: int) -> int:
    """Side length after conv 3×3 → pool 2 → conv 3×3 → pool 2 of a side padded to :func:`_padded`."""
    return ((_padded(size) - 2) // 2 - 2) // 2


def _check_size(shape) -> None:
    if min(shape[0], shape[1]) < MIN_SIZE:
        from vaekit.errors import ShapeError

        raise ShapeError(f"conv2 needs spectrograms of at least {MIN_SIZE}×{MIN_SIZE} (mel bands × frames), "
                         f"got {shape[0]}×{shape[1]}")


def _padding(shape) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns added at the end of each axis to reach the mirrored sizes (none at n ≡ 2 mod 4)."""
    return (0, _padded(shape[0]) - shape[0]), (0, _padded(shape[1]) - shape[1])


def build_encoder(input_shape, latent_dim, filters1=40, filters2=25, dense1=800, dense2=60, condition=None):
    """The notebook's conv encoder: Conv2D(filters1) → pool → Conv2D(filters2) → pool → Dense(dense1, dense2) → μ, log σ²."""
    import keras
    from keras import layers

    _check_size(input_shape)
    h, w = _grid(input_shape[0]), _grid(input_shape[1])
    inputs = keras.Input(shape=tuple(input_shape))
    pad = _padding(input_shape)
    x = layers.ZeroPadding2D(pad, name="pad")(inputs) if pad != ((0, 0), (0, 0)) else inputs
    x = layers.Conv2D(filters1, (3, 3), activation="relu")(x)  # (48, 48, 40)
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

    _check_size(output_shape)
    h, w = _grid(output_shape[0]), _grid(output_shape[1])
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
    crop = _padding(output_shape)
    if crop != ((0, 0), (0, 0)):
        outputs = layers.Cropping2D(crop, name="crop")(outputs)  # back to H×W
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
