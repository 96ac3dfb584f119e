"""The chips of a split stitched back into the areas of their scene that they cover.

Validation chips overlap and touch; most parcels are cut by a chip's edge. Put back where they
were cut from (``scene``, ``row``, ``col`` of ``chips.gpkg``), they form areas in which whole
parcels can be delineated and scored as ``geoseg predict`` and ``vectorize`` would see them.
Chips that overlap or touch belong to one area; an area larger than ``max_side`` is cut into
windows of at most that size. Pixels no chip covers are invalid, with mask 255 (ignore).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyogrio
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.training.dataset import ChipsDirectory, read_chip

logger = logging.getLogger(__name__)

MAX_SIDE = 512
"""Largest side of a stitched window, in pixels."""


@dataclass(frozen=True)
class PlacedChip:
    """A chip's files and its top-left pixel in its scene."""

    scene: str
    row: int
    col: int
    image: str
    mask: str


@dataclass
class Area:
    """A window of stitched chips: source values (h, w, bands), validity (h, w) bool (covered by
    a chip and valid there) and mask (h, w, mask bands) uint8, 255 where no chip covers."""

    scene: str
    row: int
    col: int
    image: np.ndarray
    valid: np.ndarray
    mask: np.ndarray

    @property
    def pixels(self) -> int:
        return int(self.valid.size)


def placed_chips(chips: ChipsDirectory, split: str) -> list[PlacedChip]:
    """The chips of ``split`` (as ``chips.files`` lists them: a fold's view may differ from
    ``chips.gpkg``) with their scene and pixel offsets, from ``chips.gpkg``."""
    index = pyogrio.read_dataframe(
        chips.root / "chips.gpkg",
        columns=["scene", "row", "col", "image", "mask"],
        read_geometry=False,
    )
    members = {image for image, _ in chips.files[split]}
    index = index[[str(chips.root / image) in members for image in index["image"]]]
    return [
        PlacedChip(scene, int(row), int(col), str(chips.root / image), str(chips.root / mask))
        for scene, row, col, image, mask in zip(
            index["scene"], index["row"], index["col"], index["image"], index["mask"]
        )
    ]


def chip_groups(placed: Sequence[PlacedChip], size: int) -> list[list[PlacedChip]]:
    """Chips of one scene that overlap or touch (side by side, not corner to corner), grouped;
    groups and their chips in (scene, row, col) order."""
    placed = sorted(placed, key=lambda p: (p.scene, p.row, p.col))
    cells = defaultdict(list)
    for i, p in enumerate(placed):
        cells[p.scene, p.row // size, p.col // size].append(i)
    pairs = []
    for i, p in enumerate(placed):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for j in cells.get((p.scene, p.row // size + dy, p.col // size + dx), ()):
                    q = placed[j]
                    rows, cols = abs(p.row - q.row), abs(p.col - q.col)
                    if j > i and rows <= size and cols <= size and min(rows, cols) < size:
                        pairs.append((i, j))
    n = len(placed)
    links = np.array(pairs, np.int64).reshape(-1, 2).T
    graph = coo_matrix((np.ones(links.shape[1]), (links[0], links[1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    groups = defaultdict(list)
    for g, p in zip(group, placed):
        groups[g].append(p)
    return list(groups.values())  # in order of their first chip


def stitched_areas(
    chips: ChipsDirectory, split: str = "val", max_side: int = MAX_SIDE
) -> list[Area]:
    """The chips of ``split`` stitched into areas (every mask band), windows of <= ``max_side``."""
    size = chips.chip_size
    bands = list(range(len(chips.classes)))
    areas, groups = [], chip_groups(placed_chips(chips, split), size)
    for group in groups:
        top, left = min(p.row for p in group), min(p.col for p in group)
        bottom, right = max(p.row for p in group) + size, max(p.col for p in group) + size
        for row in range(top, bottom, max_side):
            for col in range(left, right, max_side):
                window = (row, col, min(max_side, bottom - row), min(max_side, right - col))
                area = _mosaic(group, window, size, bands)
                if area is not None:
                    areas.append(area)
    logger.info(
        "%d %s chips stitched into %d areas (%.2f Mpx)",
        sum(len(g) for g in groups),
        split,
        len(areas),
        sum(a.pixels for a in areas) / 1e6,
    )
    return areas


def _mosaic(group, window, size: int, bands: list[int]) -> Area | None:
    """The chips of ``group`` pasted into ``window`` (row, col, height, width); None if none
    falls in it."""
    row, col, height, width = window
    image = valid = mask = None
    for p in group:
        y0, x0 = max(p.row, row), max(p.col, col)
        y1, x1 = min(p.row + size, row + height), min(p.col + size, col + width)
        if y0 >= y1 or x0 >= x1:
            continue
        data, chip_valid, chip_mask = read_chip(p.image, p.mask, bands)
        if image is None:
            image = np.zeros((height, width, data.shape[-1]), data.dtype)
            valid = np.zeros((height, width), bool)
            mask = np.full((height, width, chip_mask.shape[-1]), 255, np.uint8)
        source = np.s_[y0 - p.row : y1 - p.row, x0 - p.col : x1 - p.col]
        target = np.s_[y0 - row : y1 - row, x0 - col : x1 - col]
        image[target] = data[source]
        valid[target] = chip_valid[source][..., 0] > 0
        mask[target] = chip_mask[source]
    if image is None:
        return None
    return Area(group[0].scene, row, col, image, valid, mask)


def thinned(areas: list[Area], pixels: int) -> list[Area]:
    """Every n-th area, n chosen so that they hold about ``pixels`` (all when they fit)."""
    total = sum(a.pixels for a in areas)
    return areas[:: max(1, math.ceil(total / pixels))]
