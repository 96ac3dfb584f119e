"""The BatchNorm U-Net: a plain Keras functional model with every layer named.

Only built-in Keras layers are used, so ``keras.models.load_model("model.keras")`` works
without geoseg installed. The model is fully convolutional: any input whose height and width
are multiples of ``2 ** depth`` runs through it.
"""

from __future__ import annotations

from dataclasses import replace

from geoseg.models.config import UNET, UNetConfig
from geoseg.models.layers import conv_block, decoder_block, output_heads


def build_model(config: UNetConfig):
    """The network ``config`` describes: geoseg's U-Net or a keras.applications encoder's, or
    an ensemble of them (``config.members`` > 1)."""
    if config.members > 1:
        return build_ensemble(config)
    if config.encoder == UNET:
        return build_unet(config)
    from geoseg.models.encoders import build_encoder_unet

    return build_encoder_unet(config)


def build_ensemble(config: UNetConfig):
    """``config.members`` networks of ``config``, named ``fold{k}``, and the mean of their
    outputs (``mean_of_folds``): one model, saved and loaded like any other."""
    import keras

    members = [build_model(replace(config, members=1)) for _ in range(config.members)]
    inputs = keras.Input(shape=(None, None, config.bands), name="image")
    outputs = []
    for k, member in enumerate(members):
        member.name = member_name(k)
        outputs.append(member(inputs))
    mean = keras.layers.Average(name="mean_of_folds", dtype="float32")(outputs)
    return keras.Model(inputs, mean, name="geoseg_ensemble")


def member_name(k: int) -> str:
    """The layer name of an ensemble's k-th member."""
    return f"fold{k}"


def build_unet(config: UNetConfig, name: str = "geoseg_unet"):
    """Build the U-Net for ``config``; the output is float32 sigmoid values per target.

    Layers are named ``down{level}_*``, ``bottom_*``, ``up{level}_*`` and ``head`` (the output,
    (n, h, w, targets) in band order), so weights and activations can be looked up by name.
    """
    import keras

    inputs = keras.Input(shape=(None, None, config.bands), name="image")
    x = inputs
    skips = []
    for level in range(config.depth):
        x = conv_block(x, config.base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = conv_block(x, config.base_filters * 2**config.depth, "bottom")
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="bottom_dropout")(x)
    for level in reversed(range(config.depth)):
        x = decoder_block(x, skips[level], config.base_filters * 2**level, f"up{level}")
    return keras.Model(inputs, output_heads(x, config), name=name)
