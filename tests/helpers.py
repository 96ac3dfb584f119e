"""Checks shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely


def mask_agreement(chips_dir: Path, truth, band: int = 1) -> tuple[float, int]:
    """Share of labelled mask pixels that equal "pixel centre inside ``truth``", and their count.

    ``truth`` is a shapely geometry in the chips' CRS; the check does not use GDAL's rasteriser.
    """
    agree = total = 0
    for record in gpd.read_file(chips_dir / "chips.gpkg").itertuples():
        with rasterio.open(chips_dir / record.mask) as chip:
            mask, transform = chip.read(band), chip.transform
        rows, cols = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
        xs, ys = transform @ (cols + 0.5, rows + 0.5)
        expected = shapely.contains_xy(truth, xs, ys)
        labelled = mask != 255
        agree += int((mask[labelled] == expected[labelled]).sum())
        total += int(labelled.sum())
    return agree / max(total, 1), total
