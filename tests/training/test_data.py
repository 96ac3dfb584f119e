"""The chips directory and the tf.data pipeline over it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import tensorflow as tf

from geoseg.errors import InputFileError, ParameterError
from geoseg.io.raster import normalize
from geoseg.training.dataset import (
    flip_rotate,
    make_dataset,
    mask_invalid,
    open_chips,
    read_chip,
    scale_batch,
    select_classes,
)


def test_open_chips_lists_both_splits(tiny_chips):
    chips = open_chips(tiny_chips)
    assert chips.classes == ["parcels", "boundary"] and chips.chip_size == 64
    assert chips.files["train"] and chips.files["val"]
    assert all(p.endswith(".tif") for pair in chips.files["train"] for p in pair)


def test_open_chips_reads_an_optional_test_split(tiny_chips, tmp_path):
    import geopandas as gpd

    assert open_chips(tiny_chips).files["test"] == []
    chips = tmp_path / "with_test"
    shutil.copytree(tiny_chips, chips)
    index = gpd.read_file(chips / "chips.gpkg")
    index.loc[index.index[:3], "split"] = "test"
    index.to_file(chips / "chips.gpkg", engine="pyogrio")
    opened = open_chips(chips)
    assert len(opened.files["test"]) == 3 and opened.files["train"] and opened.files["val"]
    assert {p for pair in opened.files["test"] for p in pair}.isdisjoint(
        p for pair in opened.files["train"] + opened.files["val"] for p in pair
    )
    images, masks = next(iter(make_dataset(opened, "test", 8, [1], training=False)))
    assert images.shape[0] == 3 and masks.shape == (3, 64, 64, 1)


def test_not_a_chips_directory(tmp_path, tiny_chips):
    with pytest.raises(InputFileError, match="no such"):
        open_chips(tmp_path / "missing")
    with pytest.raises(InputFileError, match="not a chips directory"):
        open_chips(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_chips, broken)
    (broken / "dataset.json").write_text("{}")
    with pytest.raises(InputFileError, match="not a geoseg dataset.json"):
        open_chips(broken)
    record = json.loads((tiny_chips / "dataset.json").read_text())
    (broken / "dataset.json").write_text(json.dumps({**record, "classes": []}))
    with pytest.raises(InputFileError, match="no masks"):
        open_chips(broken)


def test_class_selection(tiny_chips):
    chips = open_chips(tiny_chips)
    assert select_classes(chips, None) == [0, 1]
    assert select_classes(chips, ["boundary"]) == [1]
    with pytest.raises(ParameterError, match="'roads'"):
        select_classes(chips, ["roads"])


def test_batches_have_chip_shape_and_float_masks(tiny_chips):
    chips = open_chips(tiny_chips)
    dataset = make_dataset(chips, "train", 4, [1], training=True, seed=1)
    images, masks = next(iter(dataset))
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
    assert masks.shape == (4, 64, 64, 1) and masks.dtype == tf.float32
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0, 255.0}
    assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 2.0


@pytest.mark.parametrize("cache", [False, True])
def test_training_order_is_reproducible_and_reshuffled(tiny_chips, cache):
    chips = open_chips(tiny_chips)

    def epoch(dataset):
        return np.concatenate([m.numpy().sum(axis=(1, 2, 3)) for _, m in dataset])

    first = make_dataset(chips, "train", 4, [1], training=True, seed=7, cache=cache)
    again = make_dataset(chips, "train", 4, [1], training=True, seed=7, cache=cache)
    one, two = epoch(first), epoch(first)
    np.testing.assert_array_equal(one, epoch(again))
    assert not np.array_equal(one, two)  # a new order (and new flips) every epoch


@pytest.mark.parametrize("cache", [False, True])
def test_an_epoch_of_repeats_passes_over_every_chip_that_often(tiny_chips, cache):
    from geoseg.training.fit import epoch_repeats

    chips = open_chips(tiny_chips)
    n = len(chips.files["train"])
    assert epoch_repeats(n, 0) == 1 and epoch_repeats(n, n) == 1 and epoch_repeats(n, n + 1) == 2
    once = make_dataset(chips, "train", 4, [1], training=True, augment_chips=False, cache=cache)
    thrice = make_dataset(
        chips, "train", 4, [1], training=True, augment_chips=False, cache=cache, repeats=3
    )

    def chip_sums(dataset):
        return sorted(float(s) for _, m in dataset for s in m.numpy().sum(axis=(1, 2, 3)))

    assert chip_sums(thrice) == sorted(chip_sums(once) * 3)


def test_augmentation_moves_image_and_mask_together():
    image = tf.random.stateless_uniform((16, 16, 3), (0, 0))
    mask = tf.cast(image[..., :1] > 0.5, tf.uint8)
    for seed in range(8):
        moved_image, moved_mask = flip_rotate((image, mask), tf.constant([seed, 3], tf.int64))
        expected = tf.cast(moved_image[..., :1] > 0.5, tf.uint8)
        np.testing.assert_array_equal(moved_mask.numpy(), expected.numpy())


def test_chips_are_read_in_their_source_dtype(tiny_chips):
    chips = open_chips(tiny_chips)
    data, valid, mask = read_chip(*chips.files["val"][0], [0, 1])
    assert data.shape == (64, 64, 3) and data.dtype == np.uint8 and valid.shape == (64, 64, 1)
    assert mask.shape == (64, 64, 2) and mask.dtype == np.uint8


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_normalisation_of_any_dtype(dtype):
    data = np.array([[[10, 20], [30, 40]]], dtype=dtype)
    stats = {"low": "p2", "high": "p98", "bands": [{"p2": 20.0, "p98": 30.0}]}
    valid = np.array([[True, True], [True, False]])
    out = normalize(data, valid, stats)
    assert out.shape == (2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[-1.0, 0.0], [1.0, 0.0]])


def test_pipeline_normalises_like_numpy(tiny_chips):
    """Training (TensorFlow) and prediction (numpy) must feed the model the same values."""
    chips = open_chips(tiny_chips)
    images, _ = next(iter(make_dataset(chips, "val", 3, [0], training=False)))
    for image, (path, _) in zip(images.numpy(), chips.files["val"][:3]):
        with rasterio.open(path) as src:
            expected = normalize(src.read(), src.dataset_mask() > 0, chips.record["normalization"])
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_tensorflow_normalisation_zeroes_nan_nodata_like_numpy():
    data = np.array([[[np.nan, 25.0], [30.0, 1e9]]], np.float32)  # (bands, h, w)
    valid = np.array([[False, True], [True, True]])
    stats = {"low": "p2", "high": "p98", "bands": [{"p2": 20.0, "p98": 30.0}]}
    batch = np.moveaxis(data, 0, -1)[None]
    image = mask_invalid(scale_batch(batch, stats), valid[None, ..., None].astype(np.uint8))
    np.testing.assert_allclose(image.numpy()[0], normalize(data, valid, stats))
    assert np.isfinite(image.numpy()).all()


def test_regression_targets_are_decoded_and_classes_left_alone():
    from geoseg.training.dataset import decode_targets

    channels = [[0, 1, 255], [0, 127, 254, 255], [1, 0, 255]]
    mask = np.stack([np.resize(np.array(c, np.uint8), 4) for c in channels], axis=-1)[None]
    decoded = decode_targets(mask, ["class", "regression", "class"]).numpy()
    np.testing.assert_allclose(decoded[0, :, 0], [0, 1, 255, 0])
    np.testing.assert_allclose(decoded[0, :, 1], [0, 127 / 254, 1.0, 255])
    np.testing.assert_allclose(decoded[0, :, 2], [1, 0, 255, 1])
    assert decoded.dtype == np.float32
