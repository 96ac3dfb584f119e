"""The U-Net: shapes, names, fully convolutional, save and load with plain Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geoseg.errors import ParameterError
from geoseg.model import UNetConfig, build_unet


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
