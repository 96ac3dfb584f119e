"""The BatchNorm U-Net: a plain Keras functional model with every layer named.

Only built-in Keras layers are used, so ``keras.models.load_model("model.keras")`` works
without geoseg installed. The model is fully convolutional: any input whose height and width
are multiples of ``2 ** depth`` runs through it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from geoseg.contracts import TASKS
from geoseg.errors import ParameterError

BN_MOMENTUM = 0.9
"""Keras' default (0.99) leaves the moving statistics far from the data after the few hundred
steps of a small training set, and the model then predicts poorly in inference mode."""
ENCODER_DIVISOR = 32
UNET = "unet"
"""The encoder name of geoseg's own BatchNorm U-Net; other names are keras.applications
encoders (:mod:`geoseg.encoders`)."""


def head_key(name: str) -> str:
    """A target name made safe for layer and metric names, e.g. ``head_{key}``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the network: input bands, output classes, levels and width.

    ``heads`` names the targets (one output channel each, in order); with more than one, each
    target gets its own 1x1 sigmoid head ``head_{name}``. Without names (models written before
    heads existed) one 1x1 convolution gives every channel. With ``task`` ``multiclass`` the
    outputs are one softmax (``heads`` then starts with :data:`BACKGROUND`). ``encoder`` is
    :data:`UNET` or a keras.applications encoder under the same decoder. With ``members`` > 1
    the network is that many such U-Nets (``fold0``, ``fold1``, ...) whose outputs are averaged:
    the ensemble that ``train --folds`` writes.
    """

    bands: int
    classes: int
    depth: int = 4
    base_filters: int = 32
    dropout: float = 0.0
    heads: tuple[str, ...] = ()
    task: str = "multilabel"
    encoder: str = UNET
    members: int = 1

    def __post_init__(self):
        object.__setattr__(self, "heads", tuple(str(h) for h in self.heads or ()))
        if self.bands < 1 or self.classes < 1:
            raise ParameterError("a U-Net needs at least one input band and one class")
        if self.task not in TASKS:
            raise ParameterError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "multiclass" and self.classes < 2:
            raise ParameterError("a multiclass model needs background and at least one class")
        if self.heads and len(self.heads) != self.classes:
            raise ParameterError(f"{len(self.heads)} head names for {self.classes} outputs")
        keys = [head_key(h) for h in self.heads]
        if len(set(keys)) != len(keys):
            raise ParameterError(f"head names {', '.join(self.heads)} are too alike; rename one")
        if not 1 <= self.depth <= 8:
            raise ParameterError(f"depth must be between 1 and 8, not {self.depth}")
        if self.base_filters < 1:
            raise ParameterError(f"base filters must be at least 1, not {self.base_filters}")
        if not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.members < 1:
            raise ParameterError(f"an ensemble needs at least one member, not {self.members}")

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this (32 under a keras.applications
        encoder, which halves the resolution five times)."""
        return 2**self.depth if self.encoder == UNET else ENCODER_DIVISOR

    def to_dict(self) -> dict:
        record = asdict(self)
        record["heads"] = list(self.heads)
        return record


def _conv_block(x, filters: int, name: str):
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


def build_model(config: UNetConfig):
    """The network ``config`` describes: geoseg's U-Net or a keras.applications encoder's, or
    an ensemble of them (``config.members`` > 1)."""
    if config.members > 1:
        return build_ensemble(config)
    if config.encoder == UNET:
        return build_unet(config)
    from geoseg.encoders import build_encoder_unet

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


def config_from_record(record: dict) -> UNetConfig:
    """The config of a model card's ``model`` record (older cards lack task and encoder)."""
    fields = {f for f in UNetConfig.__dataclass_fields__}
    return UNetConfig(**{k: v for k, v in record.items() if k in fields})


def decoder_block(x, skip, filters: int, name: str):
    """Upsample x2 (bilinear), concatenate the skip (if any), then the conv block: one level of
    the decoder, named ``{name}_upsample``, ``{name}_concat``, ``{name}_conv1`` ..."""
    import keras

    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample")(x)
    if skip is not None:
        x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
    return _conv_block(x, filters, name)


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
        x = _conv_block(x, config.base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_block(x, config.base_filters * 2**config.depth, "bottom")
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="bottom_dropout")(x)
    for level in reversed(range(config.depth)):
        x = decoder_block(x, skips[level], config.base_filters * 2**level, f"up{level}")
    return keras.Model(inputs, output_heads(x, config), name=name)
