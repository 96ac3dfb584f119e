"""The U-Net: shapes, names, fully convolutional, save and load with plain Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geoseg.errors import ParameterError
from geoseg.models.config import UNetConfig
from geoseg.models.unet import build_unet


@pytest.mark.parametrize(("depth", "bands", "classes"), [(1, 1, 1), (2, 3, 2), (3, 4, 3)])
def test_output_shape_for_depths_and_bands(depth, bands, classes):
    model = build_unet(UNetConfig(bands, classes, depth=depth, base_filters=4))
    x = np.random.default_rng(0).random((2, 32, 32, bands), np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, 32, 32, classes) and y.dtype == np.float32
    assert ((y > 0) & (y < 1)).all()
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names) and "head" in names and f"down{depth - 1}_bn2" in names


def test_runs_on_inputs_larger_than_a_chip_and_not_square():
    model = build_unet(UNetConfig(3, 1, depth=2, base_filters=4))
    assert model(np.zeros((1, 96, 160, 3), np.float32)).shape == (1, 96, 160, 1)


def test_save_and_load_without_custom_objects(tmp_path):
    model = build_unet(UNetConfig(3, 2, depth=2, base_filters=4, dropout=0.2))
    x = np.random.default_rng(1).random((1, 64, 64, 3), np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    assert loaded.get_layer("bottom_dropout").rate == pytest.approx(0.2)


def test_head_stays_float32_under_mixed_precision():
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_unet(UNetConfig(3, 1, depth=2, base_filters=4))
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    output = model(np.zeros((1, 32, 32, 3), np.float32))
    assert keras.backend.standardize_dtype(output.dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs", [{"depth": 0}, {"base_filters": 0}, {"dropout": 1.0}, {"bands": 0}]
)
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ParameterError):
        UNetConfig(**{"bands": 3, "classes": 1, **kwargs})


def test_named_heads_make_one_output_in_band_order():
    config = UNetConfig(3, 3, depth=2, base_filters=4, heads=("parcels", "boundary", "distance"))
    model = build_unet(config)
    x = np.random.default_rng(2).random((1, 32, 32, 3), np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (1, 32, 32, 3) and ((y > 0) & (y < 1)).all()
    assert model.layers[-1].name == "head"
    for band, name in enumerate(config.heads):
        head = keras.Model(model.input, model.get_layer(f"head_{name}").output)
        np.testing.assert_allclose(head(x).numpy()[..., 0], y[..., band], atol=1e-6)


def test_one_named_head_keeps_the_single_target_layers():
    model = build_unet(UNetConfig(3, 1, depth=2, base_filters=4, heads=("boundary",)))
    names = {layer.name for layer in model.layers}
    assert {"head_logits", "head"} <= names and "head_boundary" not in names


def test_config_round_trips_through_the_card_and_saves_with_heads(tmp_path):
    config = UNetConfig(3, 2, depth=2, base_filters=4, heads=["a b", "c"])
    assert config.heads == ("a b", "c") and UNetConfig(**config.to_dict()) == config
    model = build_unet(config)
    assert {"head_a_b", "head_c"} <= {layer.name for layer in model.layers}
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(3).random((1, 32, 32, 3), np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_heads_stay_float32_under_mixed_precision():
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_unet(UNetConfig(3, 2, depth=2, base_filters=4, heads=("a", "b")))
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("head_a").compute_dtype == "float32"
    output = model(np.zeros((1, 32, 32, 3), np.float32))
    assert keras.backend.standardize_dtype(output.dtype) == "float32"


@pytest.mark.parametrize("heads", [("a",), ("a", "a"), ("a b", "a_b")])
def test_head_names_must_fit_the_outputs(heads):
    with pytest.raises(ParameterError):
        UNetConfig(3, 2, heads=heads)
