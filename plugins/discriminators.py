"""Discriminator ``patch``: a PatchGAN on the normalised mel spectrogram, for the adversarial phase.

``layers`` × (Conv2D(filters·2^i, 3×3, stride 2, no bias) → leaky ReLU 0.2), then Conv2D(1, 3×3): one logit per
patch of the spectrogram (a receptive field of 2^(layers+1)+1 bins and frames, roughly), not one per
clip, so it judges local texture (harmonics, onsets) wherever it is.  It returns every layer's
activations and the logits last: the adversarial phase matches the features of data and reconstructions
on all of them (:mod:`vaekit.adversarial`).  Any H×W (stride-2 "same" convolutions).  Backend-agnostic Keras.
"""

import vaekit


def build_patch(input_shape, filters=32, layers=3):
    """PatchGAN: `layers` stride-2 3×3 convolutions (filters·2^i channels, leaky ReLU) → a 3×3 conv to one logit per patch."""
    import keras
    from keras import layers as kl

    inputs = keras.Input(shape=tuple(input_shape))
    x, features = inputs, []
    for i in range(layers):
        # No bias: TensorFlow's graph optimiser fuses conv + bias + leaky ReLU and then fails on the leaky
        # ReLU's gradient, which needs the unfused sum ("remapper failed" on the console; results unchanged).
        x = kl.Conv2D(filters * 2 ** i, 3, strides=2, padding="same", use_bias=False, name=f"disc_conv{i}")(x)
        x = kl.LeakyReLU(0.2, name=f"disc_act{i}")(x)
        features.append(x)
    logits = kl.Conv2D(1, 3, padding="same", name="disc_logits", dtype="float32")(x)
    return keras.Model(inputs, [*features, logits], name="patch_discriminator")


@vaekit.hookimpl
def register_discriminators(register):
    register("patch", build_patch, options={"filters": {"min": 1, "max": 1024}, "layers": {"min": 1, "max": 6}})
