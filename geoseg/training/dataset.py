"""A chips directory (from ``geoseg tile``) and the tf.data pipeline that feeds training.

Chips are read with rasterio in parallel map calls (and cached as read when they fit in
memory), shuffled, flipped and rotated the same way for image and mask, batched, normalised
with the statistics in dataset.json and prefetched.

For ``task="multiclass"`` the masks of the chosen classes become one class code per pixel as
they are read (:func:`multiclass_codes`), and one-hot targets after batching.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags

from geoseg.contracts import (
    CLASS_MAP_NODATA,
    DATASET_NAME,
    DISTANCE_SCALE,
    IGNORE,
    TASKS,
    DatasetRecord,
)
from geoseg.errors import InputFileError, ParameterError
from geoseg.io.raster import NORMALIZED_RANGE, normalization_constants

SPLITS = ("train", "val", "test")
"""Splits read from chips.gpkg; ``test`` (held out from training and threshold choice) is
optional and empty when the chips have none."""
CACHE_SHARE = 0.25
"""Decoded chips are kept in memory after the first epoch when a split needs less than this
share of the machine's memory (in their source dtype, as read)."""


@dataclass(frozen=True)
class ChipsDirectory:
    """A validated chips directory: its dataset.json record and chip files per split."""

    root: Path
    record: DatasetRecord
    files: dict[str, list[tuple[str, str]]]
    """(image path, mask path) per split of :data:`SPLITS`, absolute (an absent split is [])."""

    @property
    def chip_size(self) -> int:
        return self.record.chip_size

    @property
    def classes(self) -> list[str]:
        return self.record.classes

    @property
    def band_count(self) -> int:
        return self.record.band_count

    @property
    def targets(self) -> dict[str, dict]:
        """Name -> kind (``class`` or ``regression``) and role, for every mask band."""
        return self.record.targets

    def kinds(self, class_bands: Sequence[int]) -> list[str]:
        """The kind of each of the mask bands ``class_bands``."""
        targets = self.targets
        return [targets[self.classes[b]]["kind"] for b in class_bands]


def open_chips(path: str | Path) -> ChipsDirectory:
    """Read dataset.json and chips.gpkg; refuse anything that is not a labelled chips directory."""
    import pyogrio

    root = Path(path).absolute()
    if not root.is_dir():
        raise InputFileError(f"{path}: no such chips directory")
    if not (root / DATASET_NAME).is_file() or not (root / "chips.gpkg").is_file():
        raise InputFileError(
            f"{path} is not a chips directory (no dataset.json and chips.gpkg; make one with "
            "geoseg tile)"
        )
    record = DatasetRecord.read(root)
    if not record.classes:
        raise InputFileError(f"{path}: the chips have no masks (tile them with `labels`)")
    index = pyogrio.read_dataframe(
        root / "chips.gpkg", columns=["id", "split", "image", "mask"], read_geometry=False
    )
    files = {split: [] for split in SPLITS}
    for split, image, mask in zip(index["split"], index["image"], index["mask"]):
        if split in files:
            files[split].append((str(root / image), str(root / mask)))
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
        raise ParameterError("a class is named twice in `classes`")
    return [chips.classes.index(n) for n in names]


def read_chip(
    image_path: str, mask_path: str, class_bands: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chip: source values (h, w, bands), validity (h, w, 1) and mask (h, w, classes) uint8."""
    # Chips have internal masks: listing their (large) folder on every open is wasted time.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        with rasterio.open(image_path) as src:
            data = src.read()
            if all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums):
                valid = np.ones(data.shape[1:], np.uint8)
            else:
                valid = (src.dataset_mask() > 0).astype(np.uint8)
            valid = valid[..., None]
        with rasterio.open(mask_path) as src:
            mask = src.read([b + 1 for b in class_bands])
    return np.moveaxis(data, 0, -1).copy(), valid, np.moveaxis(mask, 0, -1).copy()


def multiclass_codes(mask: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class codes (uint8) from the 0/1/255 masks of N mutually exclusive classes.

    ``axis`` holds the classes, in ``--classes`` order. A pixel's code is the 1-based index of
    the last class positive there (a later class wins an overlap), 0 (background) where none
    is, and :data:`~geoseg.contracts.CLASS_MAP_NODATA` (255) where any class is ignored.
    """
    mask = np.moveaxis(np.asarray(mask), axis, -1)
    codes = np.zeros(mask.shape[:-1], np.uint8)
    ignored = np.zeros(mask.shape[:-1], bool)
    for code in range(1, mask.shape[-1] + 1):
        band = mask[..., code - 1]
        # Codes grow with the class order: the last positive class has the largest.
        np.maximum(codes, (band == 1).view(np.uint8) * np.uint8(code), out=codes)
        ignored |= band == IGNORE
    codes[ignored] = CLASS_MAP_NODATA
    return codes


def one_hot_targets(codes, depth: int):
    """Float32 one-hot targets (..., depth) from class codes (..., 1); 255 in every channel
    where the code is :data:`~geoseg.contracts.CLASS_MAP_NODATA`."""
    import tensorflow as tf

    codes = tf.cast(codes[..., 0], tf.int32)
    one_hot = tf.one_hot(codes, depth, dtype=tf.float32)  # all 0 for an out-of-range code
    ignored = (codes == CLASS_MAP_NODATA)[..., None]
    return tf.where(ignored, tf.constant(float(IGNORE)), one_hot)


def check_multiclass_bands(chips: ChipsDirectory, class_bands: Sequence[int]) -> None:
    """Refuse regression targets (e.g. ``distance``) as classes of a multiclass model."""
    for band, kind in zip(class_bands, chips.kinds(class_bands)):
        if kind == "regression":
            raise ParameterError(
                f"{chips.classes[band]!r} is a regression target and cannot be a class of "
                "`task` multiclass; choose class targets with `classes`"
            )


def decode_targets(mask, kinds: Sequence[str]):
    """Float32 targets from uint8 masks (..., targets): classes stay 0/1, regression values
    0..254 become value / 254, and 255 (ignore) stays 255."""
    import tensorflow as tf

    mask = tf.cast(mask, tf.float32)
    if "regression" not in kinds:
        return mask
    regression = tf.constant([k == "regression" for k in kinds])
    scaled = tf.where(mask <= DISTANCE_SCALE, mask / DISTANCE_SCALE, mask)
    return tf.where(regression, scaled, mask)


def scale_batch(data, normalization: dict):
    """TensorFlow version of :func:`geoseg.io.raster.normalize` before masking: (n, h, w, bands)."""
    import tensorflow as tf

    low, scale = normalization_constants(normalization)
    return tf.clip_by_value((tf.cast(data, tf.float32) - low) * scale, *NORMALIZED_RANGE)


def mask_invalid(image, valid):
    """Invalid pixels (also NaN nodata) become 0, as in :func:`geoseg.io.raster.normalize`."""
    import tensorflow as tf

    return tf.where(valid > 0, image, tf.zeros_like(image))


def flip_rotate(tensors: tuple, seed) -> tuple:
    """One of the 8 flips/rotations, the same for every (h, w, ...) tensor of a chip.

    ``seed`` is a pair of integers for stateless random ops, so results are reproducible.
    """
    import tensorflow as tf

    k = tf.random.stateless_uniform([], seed, 0, 4, dtype=tf.int32)
    flip = tf.random.stateless_uniform([], seed + 1) < 0.5

    def move(t):
        t = tf.image.rot90(t, k)
        return tf.cond(flip, lambda: tf.image.flip_left_right(t), lambda: t)

    return tuple(move(t) for t in tensors)


def jitter_batch(images, seed, jitter: float):
    """Random contrast (x [1-j, 1+j] about each chip's mean) and brightness (+ [-j, j])."""
    import tensorflow as tf

    shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
    contrast = tf.random.stateless_uniform(shape, seed + 2, 1.0 - jitter, 1.0 + jitter)
    brightness = tf.random.stateless_uniform(shape, seed + 3, -jitter, jitter)
    mean = tf.reduce_mean(images, axis=(1, 2), keepdims=True)
    return tf.clip_by_value((images - mean) * contrast + mean + brightness, *NORMALIZED_RANGE)


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
    task: str = "multilabel",
    repeats: int = 1,
):
    """A ``tf.data.Dataset`` of (image, mask) batches; masks are float32 with 255 = ignore.

    ``task="multilabel"``: one channel per mask band (regression targets as 0..1, see
    :func:`decode_targets`). ``task="multiclass"``: one-hot (background, then the classes of
    ``class_bands`` in order) by the rule of :func:`multiclass_codes`, 255 in every channel
    of an ignored pixel. With ``training``, chips are reshuffled every epoch and augmented
    (when ``augment_chips``). ``cache`` keeps decoded chips in memory after the first pass; by
    default it does so when they take less than :data:`CACHE_SHARE` of the memory.
    ``repeats`` passes over the chips (each reshuffled, with new flips) make one epoch.
    Normalisation runs on batches.
    """
    import tensorflow as tf

    if task not in TASKS:
        raise ParameterError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    multiclass = task == "multiclass"
    if multiclass:
        check_multiclass_bands(chips, class_bands)
    files = chips.files[split]
    if not files:
        raise ParameterError(f"{chips.root}: the {split} split has no chips")
    load, chip_bytes = _chip_loader(chips, class_bands, multiclass)
    if cache is None:
        cache = len(files) * chip_bytes < CACHE_SHARE * _memory_bytes()
    dataset = _decoded(files, load, cache, seed if training else None, repeats)
    augmenting = training and augment_chips
    if augmenting:  # per pixel, class codes move like the masks they come from
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda chip, s: flip_rotate(chip, s), num_parallel_calls=tf.data.AUTOTUNE
        )
    normalization = chips.record["normalization"]
    dataset = dataset.batch(batch_size, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(
        lambda data, valid, mask: (scale_batch(data, normalization), valid, mask),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if augmenting and jitter:
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, s: (jitter_batch(batch[0], s, jitter), *batch[1:])
        )
    kinds, classes = chips.kinds(class_bands), len(class_bands) + 1

    def targets(mask):
        return one_hot_targets(mask, classes) if multiclass else decode_targets(mask, kinds)

    dataset = dataset.map(
        lambda image, valid, mask: (mask_invalid(image, valid), targets(mask)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _chip_loader(chips: ChipsDirectory, class_bands: Sequence[int], multiclass: bool):
    """A graph function reading one chip's (image, validity, mask) from its two paths, and
    the bytes a decoded chip takes."""
    import tensorflow as tf

    size, bands = chips.chip_size, chips.band_count
    mask_bands = 1 if multiclass else len(class_bands)  # a multiclass chip keeps its codes
    dtype = tf.as_dtype(np.dtype(chips.record["bands"]["dtype"]))

    def read(image_path: bytes, mask_path: bytes):
        data, valid, mask = read_chip(image_path.decode(), mask_path.decode(), class_bands)
        return data, valid, multiclass_codes(mask)[..., None] if multiclass else mask

    def load(image_path, mask_path):
        data, valid, mask = tf.numpy_function(
            read, [image_path, mask_path], [dtype, tf.uint8, tf.uint8], stateful=False
        )
        data.set_shape((size, size, bands))
        valid.set_shape((size, size, 1))
        mask.set_shape((size, size, mask_bands))
        return data, valid, mask

    return load, size * size * (dtype.size * bands + 1 + mask_bands)


def _decoded(files, load, cache: bool, shuffle_seed: int | None, repeats: int):
    """The chips of ``files`` decoded by ``load``, reshuffled every pass with ``shuffle_seed``
    (None: in order), ``repeats`` passes; ``cache`` decodes once and keeps them in memory."""
    import tensorflow as tf

    images, masks = zip(*files)
    dataset = tf.data.Dataset.from_tensor_slices((list(images), list(masks)))

    def shuffled(d):
        if shuffle_seed is None:
            return d
        return d.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:  # decode once, then shuffle the decoded chips every epoch
        dataset = shuffled(dataset.map(load, **parallel).cache())
    else:  # shuffle file names, decode every epoch
        dataset = shuffled(dataset).map(load, **parallel)
    return dataset.repeat(repeats) if repeats > 1 else dataset


def _memory_bytes() -> int:
    """Memory available to this process: the machine's, or a container's limit if lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            return min(physical, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return physical
