"""Encoder and decoder ``resconv``: strided convolutions and residual blocks, any H×W (docs/models.md).

Encoder, per level: Conv2D(filters·2^level, 3×3, stride 2) → norm → act → ``blocks`` residual blocks;
then Flatten → Dense(dense, act) → Dense(d) μ and Dense(d) log σ².  A residual block is
x + Conv(act(Norm(Conv(act(Norm(x)))))), 3×3, same channels (the pre-activation form).  ``act`` is
``activation``: leaky ReLU (slope 0.2) by default.
Decoder: Dense(dense, act) → Dense onto the encoder's smallest grid → per level, residual blocks and
Conv2DTranspose(stride 2), channels halving → Conv2D(1, 3×3) → cropped to the input's H×W → ``output``.
Conditional (``condition=K``): the label's one-hot joins the flattened features before the dense layers
of the encoder, and z before the decoder's first dense layer.
Stride-2 "same" convolutions take any size (each level maps n to ⌈n/2⌉) and the decoder crops its
2^levels-multiple back, so there is no size rule like conv2's.  Backend-agnostic Keras only.

Defaults were chosen with ``benchmarks/quality.py`` at the notebook's settings: normalisation is off by
default because batch and layer normalisation both reconstructed the test set worse in 10 epochs, and
the activation is leaky ReLU because it reconstructed spoken digits best of ReLU, ELU, SiLU and leaky ReLU, at ReLU's cost.
"""

import vaekit

NORMS = ("none", "batch", "layer")
OUTPUTS = ("linear", "sigmoid", "relu")
ACTIVATIONS = ("relu", "elu", "silu", "gelu", "leaky_relu")


def _grid(size: int, levels: int) -> int:
    """The side after ``levels`` stride-2 'same' convolutions: ⌈size / 2^levels⌉ (each maps n to ⌈n/2⌉)."""
    for _ in range(levels):
        size = -(-size // 2)
    return size


def _norm(kind: str, name: str):
    from keras import layers

    if kind == "batch":
        return layers.BatchNormalization(name=name)
    if kind == "layer":
        return layers.LayerNormalization(name=name)
    return layers.Identity(name=name)


def _conv_norm_act(x, filters, stride, norm, name, transpose=False, act="relu"):
    from keras import layers

    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, 3, strides=stride, padding="same", use_bias=norm == "none", name=f"{name}_conv")(x)
    x = _norm(norm, f"{name}_norm")(x)
    return layers.Activation(act, name=f"{name}_act")(x)


def _residual(x, norm, name, act="relu"):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x))))))."""
    from keras import layers

    filters = x.shape[-1]
    y = _norm(norm, f"{name}_norm1")(x)
    y = layers.Activation(act, name=f"{name}_act1")(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv1")(y)
    y = _norm(norm, f"{name}_norm2")(y)
    y = layers.Activation(act, name=f"{name}_act2")(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def _check_size(shape, levels):
    if min(shape[0], shape[1]) < 2:
        from vaekit.errors import ShapeError

        raise ShapeError(f"resconv needs spectrograms of at least 2×2, got {shape[0]}×{shape[1]}")


def build_encoder(input_shape, latent_dim, filters=16, levels=2, blocks=1, dense=1024, norm="none", activation="leaky_relu",
                  condition=None):
    """Residual conv encoder: `levels` × (stride-2 conv, `blocks` residual blocks), channels filters·2^level → μ, log σ²."""
    import keras
    from keras import layers

    _check_size(input_shape, levels)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for level in range(levels):
        x = _conv_norm_act(x, filters * 2 ** level, 2, norm, f"down{level}", act=activation)
        for b in range(blocks):
            x = _residual(x, norm, f"down{level}_res{b}", act=activation)
    x = layers.Flatten()(x)
    label = _with_label(condition)
    if label is not None:
        x = layers.Concatenate(name="with_label")([x, label])
    if dense:
        x = layers.Dense(dense, activation=activation, name="dense_hidden")(x)
    z_mean = layers.Dense(latent_dim, name="dense_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="dense_log_std")(x)
    return keras.Model([inputs, label] if label is not None else inputs, [z_mean, z_log_var], name="resconv_encoder")


def _with_label(condition):
    """The one-hot label input of a conditional model (``condition`` classes), or None."""
    import keras

    return keras.Input(shape=(condition,), name="label") if condition else None


def build_decoder(latent_dim, output_shape, filters=16, levels=2, blocks=1, dense=1024, norm="none", output="linear",
                  activation="leaky_relu", condition=None):
    """The encoder's mirror: Dense → grid → `levels` × (residual blocks, stride-2 transposed conv) → crop to H×W."""
    import keras
    from keras import layers

    _check_size(output_shape, levels)
    height, width = output_shape[0], output_shape[1]
    h, w = _grid(height, levels), _grid(width, levels)
    top = filters * 2 ** (levels - 1)
    inputs = keras.Input(shape=(latent_dim,))
    label = _with_label(condition)
    x = layers.Concatenate(name="with_label")([inputs, label]) if label is not None else inputs
    x = layers.Dense(dense, activation=activation, name="dense_hidden")(x) if dense else x
    x = layers.Dense(h * w * top, name="dense_grid")(x)
    x = layers.Reshape((h, w, top))(x)
    for level in reversed(range(levels)):
        for b in range(blocks):
            x = _residual(x, norm, f"up{level}_res{b}", act=activation)
        x = _conv_norm_act(x, filters * 2 ** max(level - 1, 0), 2, norm, f"up{level}", transpose=True, act=activation)
    x = layers.Conv2D(output_shape[-1], 3, padding="same", name="out_conv")(x)
    # 2^levels·⌈n/2^levels⌉ ≥ n: crop the surplus rows and columns at the end.
    x = layers.Cropping2D(((0, h * 2 ** levels - height), (0, w * 2 ** levels - width)))(x)
    outputs = layers.Activation(output, name="out_activation", dtype="float32")(x)
    return keras.Model([inputs, label] if label is not None else inputs, outputs, name="resconv_decoder")


#: 1..256 base filters (the top level has filters·2^(levels-1) channels); 1..6 levels (64× downsampling);
#: 0..8 residual blocks a level.
RESCONV_RANGES = {"filters": {"min": 1, "max": 256}, "levels": {"min": 1, "max": 6}, "blocks": {"min": 0, "max": 8},
                  "dense": {"min": 0, "max": 65536},
                  "norm": {"choices": list(NORMS)}, "activation": {"choices": list(ACTIVATIONS)}}


@vaekit.hookimpl
def register_encoders(register):
    register("resconv", build_encoder, options=RESCONV_RANGES)


@vaekit.hookimpl
def register_decoders(register):
    register("resconv", build_decoder, options={**RESCONV_RANGES, "output": {"choices": list(OUTPUTS)}})
