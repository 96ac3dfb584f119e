"""Layer blocks shared by geoseg's U-Net and the decoders under keras.applications encoders."""

from __future__ import annotations

from geoseg.models.config import UNetConfig, head_key

BN_MOMENTUM = 0.9
"""Keras' default (0.99) leaves the moving statistics far from the data after the few hundred
steps of a small training set, and the model then predicts poorly in inference mode."""


def conv_block(x, filters: int, name: str):
    """(Conv 3x3 -> BatchNorm -> ReLU) twice."""
    import keras

    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(
            x
        )
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def output_heads(x, config: UNetConfig):
    """Float32 outputs, one channel per target, as the layer named ``head``.

    Multiclass: a 1x1 convolution ``head_logits`` and the softmax ``head`` over all channels.
    One target (or unnamed targets): a 1x1 convolution ``head_logits`` and the sigmoid
    ``head``. Several named targets: each its own 3x3 Conv-BatchNorm-ReLU block
    ``head_{name}_*`` (so a regression target does not pull the features of the others) and a
    1x1 sigmoid convolution ``head_{name}``, concatenated in order into ``head``.
    """
    import keras

    if config.task == "multiclass" or len(config.heads) < 2:
        logits = keras.layers.Conv2D(config.classes, 1, name="head_logits", dtype="float32")(x)
        activation = "softmax" if config.task == "multiclass" else "sigmoid"
        return keras.layers.Activation(activation, name="head", dtype="float32")(logits)
    outputs = []
    for head in config.heads:
        key = f"head_{head_key(head)}"
        y = keras.layers.Conv2D(
            config.base_filters, 3, padding="same", use_bias=False, name=f"{key}_conv"
        )(x)
        y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{key}_bn")(y)
        y = keras.layers.Activation("relu", name=f"{key}_relu")(y)
        outputs.append(
            keras.layers.Conv2D(1, 1, activation="sigmoid", name=key, dtype="float32")(y)
        )
    return keras.layers.Concatenate(name="head", dtype="float32")(outputs)


def decoder_block(x, skip, filters: int, name: str):
    """Upsample x2 (bilinear), concatenate the skip (if any), then the conv block: one level of
    the decoder, named ``{name}_upsample``, ``{name}_concat``, ``{name}_conv1`` ..."""
    import keras

    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample")(x)
    if skip is not None:
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    return conv_block(x, filters, name)
