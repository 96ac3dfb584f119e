"""Spatial folds of a chips directory for cross-validation (``geoseg train --folds``).

The train, val and spare chips (those kept aside at tile's split borders, unless they share
pixels with a test chip) are pooled and grouped into square blocks on the map (four chips a
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

from geoseg.errors import ParameterError
from geoseg.tiling.tiler import BLOCK_CHIPS, SPARE, overlap_pairs
from geoseg.training.dataset import ChipsDirectory

BLOCKS_PER_FOLD = 2
"""Fewest blocks per fold before the blocks are made smaller (down to a chip)."""
AUTO_FOLDS = "auto"
SMALL_SET_FOLDS = 3
"""Folds of ``auto`` for a small set of parcel chips: the Danish parcels' measured best
(docs/benchmarks.md)."""
SMALL_SET_PIXELS = 2**24
"""Train and val pixels (e.g. 1024 chips of 128 px) up to which a set counts as small, so
that the ensemble's three trainings stay short."""

logger = logging.getLogger(__name__)


def spatial_folds(chips: ChipsDirectory, folds: int, seed: int) -> list[ChipsDirectory]:
    """``folds`` views of ``chips``; in view k the chips of fold k are val, the others that
    share no pixel with them train."""
    if folds < 2:
        raise ParameterError(f"`folds` must be at least 2, not {folds}")
    pooled = pooled_chips(chips)
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
            + (f"`folds` {works} works" if works else "no number of folds works on these chips")
        )
    for k, view in enumerate(views):
        logger.info(
            "fold %d of %d: %d train, %d val chips",
            k + 1, folds, len(view.files["train"]), len(view.files["val"]),
        )  # fmt: skip
    return views


def auto_folds(chips: ChipsDirectory, delineates: bool, seed: int) -> int:
    """Folds for ``folds="auto"``: :data:`SMALL_SET_FOLDS` (or fewer, as many as give every
    fold train chips) for a small set of chips whose model delineates parcels, else 1."""
    pooled = pooled_chips(chips)
    pixels = len(pooled) * chips.chip_size**2
    if not delineates or pixels > SMALL_SET_PIXELS:
        why = "no parcels to delineate" if not delineates else "a large set"
        logger.info("folds auto: one model (%s)", why)
        return 1
    for folds in range(SMALL_SET_FOLDS, 1, -1):
        try:
            views = _views(chips, pooled, folds, seed)
        except ParameterError:  # too few blocks
            continue
        if all(view.files["train"] for view in views):
            logger.info(
                "folds auto: an ensemble of %d fold models for a small set of parcel chips "
                "(%d chips; %dx the training and the prediction of one model)",
                folds, len(pooled), folds,
            )  # fmt: skip
            return folds
    logger.info("folds auto: one model (no split into folds leaves every fold train chips)")
    return 1


def pooled_chips(chips: ChipsDirectory):
    """The train, val and spare chips of ``chips.gpkg`` (footprints, image and mask paths),
    without the spare chips that share pixels with a test chip."""
    index = pyogrio.read_dataframe(chips.root / "chips.gpkg", columns=["split", "image", "mask"])
    aside = index[index["split"].isin([SPARE, "test"])].reset_index(drop=True)
    is_test = (aside["split"] == "test").to_numpy()
    touching = np.concatenate(overlap_pairs(np.asarray(aside.geometry.values), is_test))
    near_test = set(aside["image"].to_numpy()[touching[~is_test[touching]]])
    pooled = index["split"].isin(["train", "val", SPARE]) & ~index["image"].isin(near_test)
    return index[pooled].reset_index(drop=True)


def _views(chips: ChipsDirectory, pooled, folds: int, seed: int) -> list[ChipsDirectory]:
    """The views of :func:`spatial_folds` for the pooled train and val chips."""
    footprints = np.asarray(pooled.geometry.values)
    unique, block_of = _blocks(footprints, chips.chip_size, folds)
    if len(unique) < folds:
        raise ParameterError(
            f"`folds` {folds} needs at least {folds} blocks of chips; these chips cover "
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
