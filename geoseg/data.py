"""A chips directory (from ``geoseg tile``) and the tf.data pipeline that feeds training.

Chips are read with rasterio in parallel map calls, normalised with the statistics in
dataset.json, augmented with the same flips and rotations for image and mask, shuffled,
batched and prefetched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags

from geoseg.errors import InputFileError, ParameterError
from geoseg.raster import normalize

SPLITS = ("train", "val")
CACHE_BYTES = 2**30
"""Decoded chips are kept in memory after the first epoch when a split needs less than this."""


@dataclass(frozen=True)
class ChipsDirectory:
    """A validated chips directory: its dataset.json record and chip files per split."""

    root: Path
    record: dict
    files: dict[str, list[tuple[str, str]]]
    """(image path, mask path) per split, absolute."""

    @property
    def chip_size(self) -> int:
        return int(self.record["chip_size"])

    @property
    def classes(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def band_count(self) -> int:
        return int(self.record["bands"]["count"])


def open_chips(path: str | Path) -> ChipsDirectory:
    """Read dataset.json and chips.gpkg; refuse anything that is not a labelled chips directory."""
    import pyogrio

    root = Path(path).absolute()
    if not root.is_dir():
        raise InputFileError(f"{path}: no such chips directory")
    record_path, index_path = root / "dataset.json", root / "chips.gpkg"
    if not record_path.is_file() or not index_path.is_file():
        raise InputFileError(
            f"{path} is not a chips directory (no dataset.json and chips.gpkg; make one with "
            "geoseg tile)"
        )
    try:
        record = json.loads(record_path.read_text())
        for key in ("chip_size", "classes", "bands", "normalization"):
            record[key]  # noqa: B018 (a missing key is the error)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{record_path}: not a geoseg dataset.json ({exc!r})") from None
    if not record["classes"]:
        raise InputFileError(f"{path}: the chips have no masks (tile them with --labels)")
    index = pyogrio.read_dataframe(
        index_path, columns=["id", "split", "image", "mask"], read_geometry=False
    )
    files = {
        split: [
            (str(root / image), str(root / mask))
            for image, mask in zip(
                index.loc[index["split"] == split, "image"],
                index.loc[index["split"] == split, "mask"],
            )
        ]
        for split in SPLITS
    }
    return ChipsDirectory(root, record, files)


def select_classes(chips: ChipsDirectory, names: Sequence[str] | None) -> list[int]:
    """Mask band indexes (0-based) of the chosen classes, in the given order (default: all)."""
    if not names:
        return list(range(len(chips.classes)))
    unknown = [n for n in names if n not in chips.classes]
    if unknown:
        raise ParameterError(
            f"class {unknown[0]!r} is not in the chips (classes: {', '.join(chips.classes)})"
        )
    if len(set(names)) != len(names):
        raise ParameterError("a class is named twice in --classes")
    return [chips.classes.index(n) for n in names]


def read_chip(
    image_path: str, mask_path: str, normalization: dict, class_bands: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """One chip as (normalised image (h, w, bands) float32, mask (h, w, classes) uint8)."""
    # Chips have internal masks: listing their (large) folder on every open is wasted time.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        with rasterio.open(image_path) as src:
            data = src.read()
            all_valid = all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)
            valid = None if all_valid else src.dataset_mask() > 0
        with rasterio.open(mask_path) as src:
            mask = src.read([b + 1 for b in class_bands])
    return normalize(data, valid, normalization), np.ascontiguousarray(np.moveaxis(mask, 0, -1))


def augment(image, mask, seed, jitter: float = 0.0):
    """One of the 8 flips/rotations, the same for image and mask; optional brightness/contrast.

    ``seed`` is a pair of integers (stateless random ops), so results are reproducible.
    """
    import tensorflow as tf

    k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seed + 1) < 0.5
    image, mask = tf.image.rot90(image, k), tf.image.rot90(mask, k)
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    mask = tf.cond(flip, lambda: tf.image.flip_left_right(mask), lambda: mask)
    if jitter:
        contrast = tf.random.stateless_uniform([], seed + 2, 1.0 - jitter, 1.0 + jitter)
        brightness = tf.random.stateless_uniform([], seed + 3, -jitter, jitter)
        mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
        image = (image - mean) * contrast + mean + brightness
    return image, mask


def make_dataset(
    chips: ChipsDirectory,
    split: str,
    batch_size: int,
    class_bands: Sequence[int],
    training: bool,
    augment_chips: bool = True,
    jitter: float = 0.0,
    seed: int = 0,
    cache: bool | None = None,
):
    """A ``tf.data.Dataset`` of (image, mask) batches; masks are float32 with 255 = ignore.

    With ``training``, chips are reshuffled every epoch and augmented (when ``augment_chips``).
    ``cache`` keeps decoded chips in memory after the first pass; by default it does so when
    they take less than :data:`CACHE_BYTES`.
    """
    import tensorflow as tf

    files = chips.files[split]
    if not files:
        raise ParameterError(f"{chips.root}: the {split} split has no chips")
    size, bands, classes = chips.chip_size, chips.band_count, len(class_bands)
    normalization = chips.record["normalization"]

    def load(image_path, mask_path):
        image, mask = tf.numpy_function(
            lambda i, m: read_chip(i.decode(), m.decode(), normalization, class_bands),
            [image_path, mask_path],
            [tf.float32, tf.uint8],
            stateful=False,
        )
        image.set_shape((size, size, bands))
        mask.set_shape((size, size, classes))
        return image, mask

    if cache is None:
        cache = len(files) * size * size * (4 * bands + classes) < CACHE_BYTES
    images, masks = zip(*files)
    dataset = tf.data.Dataset.from_tensor_slices((list(images), list(masks)))

    def shuffled(d):
        return d.shuffle(len(files), seed=seed, reshuffle_each_iteration=True) if training else d

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:  # decode once, then shuffle the decoded chips every epoch
        dataset = shuffled(dataset.map(load, **parallel).cache())
    else:  # shuffle file names, decode every epoch
        dataset = shuffled(dataset).map(load, **parallel)
    if training and augment_chips:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, s: augment(*pair, s, jitter), num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda image, mask: (image, tf.cast(mask, tf.float32)))
    return dataset.prefetch(tf.data.AUTOTUNE)
