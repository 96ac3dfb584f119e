"""Spatial folds of a chips directory for cross-validation (``geoseg train --folds``).

The train and val chips are pooled and grouped into square blocks on the map (four chips a
side, or smaller where that leaves fewer than two blocks per fold). Blocks are dealt to the
folds in a seeded order, each to the fold with the fewest chips so far. In the view of fold
k, its chips are val and the chips sharing no pixel with them train, so every chip is
validated once by a model that never saw its pixels. Test chips stay test in every view.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pyogrio
import shapely

from geoseg.data import ChipsDirectory
from geoseg.errors import ParameterError
from geoseg.tiling import BLOCK_CHIPS, overlap_pairs

BLOCKS_PER_FOLD = 2
"""Fewest blocks per fold before the blocks are made smaller (down to a chip)."""

logger = logging.getLogger(__name__)


def spatial_folds(chips: ChipsDirectory, folds: int, seed: int) -> list[ChipsDirectory]:
    """``folds`` views of ``chips``; in view k the chips of fold k are val, the others that
    share no pixel with them train."""
    if folds < 2:
        raise ParameterError(f"--folds must be at least 2, not {folds}")
    index = pyogrio.read_dataframe(chips.root / "chips.gpkg", columns=["split", "image", "mask"])
    pooled = index[index["split"].isin(["train", "val"])].reset_index(drop=True)
    views = _views(chips, pooled, folds, seed)
    empty = next((k for k, view in enumerate(views) if not view.files["train"]), None)
    if empty is not None:
        works = next(
            (k for k in range(folds - 1, 1, -1)
             if all(v.files["train"] for v in _views(chips, pooled, k, seed))),
            None,
        )  # fmt: skip
        raise ParameterError(
            f"fold {empty + 1} of {folds} has no train chips: every other chip shares pixels "
            "with its val chips (the scenes overlap); "
            + (f"--folds {works} works" if works else "no number of folds works on these chips")
        )
    for k, view in enumerate(views):
        logger.info(
            "fold %d of %d: %d train, %d val chips",
            k + 1, folds, len(view.files["train"]), len(view.files["val"]),
        )  # fmt: skip
    return views


def _views(chips: ChipsDirectory, pooled, folds: int, seed: int) -> list[ChipsDirectory]:
    """The views of :func:`spatial_folds` for the pooled train and val chips."""
    footprints = np.asarray(pooled.geometry.values)
    unique, block_of = _blocks(footprints, chips.chip_size, folds)
    if len(unique) < folds:
        raise ParameterError(
            f"--folds {folds} needs at least {folds} blocks of chips; these chips cover "
            f"{len(unique)} (tile more land or use fewer folds)"
        )
    fold_of = _deal(np.bincount(block_of), folds, seed)[block_of]
    first, second = overlap_pairs(footprints, fold_of)
    files = list(
        zip(
            (str(chips.root / p) for p in pooled["image"]),
            (str(chips.root / p) for p in pooled["mask"]),
        )
    )
    views = []
    for k in range(folds):
        near = np.zeros(len(pooled), bool)
        near[second[fold_of[first] == k]] = True
        near[first[fold_of[second] == k]] = True
        val = [f for f, fold in zip(files, fold_of) if fold == k]
        train = [f for f, fold, n in zip(files, fold_of, near) if fold != k and not n]
        views.append(replace(chips, files={**chips.files, "train": train, "val": val}))
    return views


def _blocks(footprints: np.ndarray, chip_size: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """The blocks (unique rows, columns) and each chip's block: as large as leaves
    :data:`BLOCKS_PER_FOLD` blocks per fold, from :data:`BLOCK_CHIPS` chips a side down to one.

    Large blocks matter: a train chip may share no pixel with the val chips of its fold, so
    with overlapping chips every block edge next to another fold costs a row of train chips.
    """
    side = BLOCK_CHIPS * chip_size
    while True:
        unique, block_of = np.unique(
            _map_blocks(footprints, chip_size, side), axis=0, return_inverse=True
        )
        if len(unique) >= BLOCKS_PER_FOLD * folds or side <= chip_size:
            logger.info("folds dealt in %d blocks of %d px", len(unique), side)
            return unique, block_of.ravel()
        side //= 2


def _map_blocks(footprints: np.ndarray, chip_size: int, block_px: int) -> np.ndarray:
    """(n, 2) block row and column of each chip's centre on a map grid of ``block_px`` pixels."""
    bounds = shapely.bounds(footprints)
    pixel = (bounds[0, 2] - bounds[0, 0]) / chip_size
    side = block_px * pixel
    centres = shapely.get_coordinates(shapely.centroid(footprints))
    x0, y0 = bounds[:, 0].min(), bounds[:, 3].max()
    return np.stack(
        [np.floor((y0 - centres[:, 1]) / side), np.floor((centres[:, 0] - x0) / side)], axis=1
    ).astype(np.int64)


def _deal(chips_per_block: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each block: in a seeded order, each to the fold with the fewest chips."""
    order = np.random.default_rng(seed).permutation(len(chips_per_block))
    fold_of, filled = np.zeros(len(chips_per_block), np.int64), np.zeros(folds, np.int64)
    for block in order:
        fold_of[block] = int(np.argmin(filled))
        filled[fold_of[block]] += chips_per_block[block]
    return fold_of
