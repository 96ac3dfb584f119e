"""Chips of a split stitched back into the areas they cover."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.training.chip_areas import (
    PlacedChip,
    chip_groups,
    placed_chips,
    stitched_areas,
    thinned,
)
from geoseg.training.dataset import open_chips


def placed(row: int, col: int, scene: str = "s") -> PlacedChip:
    return PlacedChip(scene, row, col, "", "")


def test_chips_that_overlap_or_touch_side_by_side_are_one_group():
    chips = [placed(0, 0), placed(0, 64), placed(32, 96), placed(200, 0), placed(264, 64)]
    groups = chip_groups(chips, 64)
    assert [[(p.row, p.col) for p in g] for g in groups] == [
        [(0, 0), (0, 64), (32, 96)],  # touching, then overlapping
        [(200, 0)],  # corner to corner with (264, 64): no shared edge
        [(264, 64)],
    ]


def test_chips_of_other_scenes_are_never_grouped():
    groups = chip_groups([placed(0, 0, "a"), placed(0, 0, "b")], 64)
    assert len(groups) == 2


def test_stitched_areas_hold_the_scene_pixels_and_masks_where_chips_are(tiny_chips):
    chips = open_chips(tiny_chips)
    areas = stitched_areas(chips, "val", max_side=96)
    val = placed_chips(chips, "val")
    assert areas and val
    assert all(max(a.valid.shape) <= 96 for a in areas)
    covered = sum(int(a.valid.sum()) for a in areas)
    with rasterio.open(tiny_chips.parent / "scene" / "image.tif") as src:
        for area in areas:
            h, w = area.valid.shape
            scene = np.moveaxis(src.read(window=Window(area.col, area.row, w, h)), 0, -1)
            assert np.array_equal(area.image[area.valid], scene[area.valid])
            assert (area.mask[~area.valid] == 255).all()
    for p in val:  # every val chip's mask is found at its place
        with rasterio.open(p.mask) as src:
            mask = np.moveaxis(src.read(), 0, -1)
        area = next(
            a
            for a in areas
            if a.row <= p.row < a.row + a.valid.shape[0]
            and a.col <= p.col < a.col + a.valid.shape[1]
        )
        h = min(64, area.row + area.valid.shape[0] - p.row)
        w = min(64, area.col + area.valid.shape[1] - p.col)
        here = area.mask[
            p.row - area.row : p.row - area.row + h, p.col - area.col : p.col - area.col + w
        ]
        assert np.array_equal(here, mask[:h, :w])
    assert covered <= len(val) * 64 * 64


def test_thinned_keeps_every_nth_area(tiny_chips):
    areas = stitched_areas(open_chips(tiny_chips), "val", max_side=64)
    total = sum(a.pixels for a in areas)
    assert thinned(areas, total) == areas
    kept = thinned(areas, total // 2)
    assert kept == areas[::2]
