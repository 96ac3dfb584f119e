"""Synthetic cadastre chips for the training benchmarks (generated, never stored)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.synthetic.scene import synth
from geoseg.tiling.tiler import tile


def synthetic_chips(root: Path, size: int, chip_size: int = 256, seed: int = 0) -> Path:
    """A ``size`` px synthetic scene tiled into chips with ``parcels`` and ``boundary`` masks."""
    synth(str(root / "scene"), size=size, seed=seed, buildings=False, overwrite=True)
    tile(
        [str(root / "scene" / "image.tif")],
        str(root / "chips"),
        labels=str(root / "scene" / "parcels.gpkg"),
        boundary_width="1.5",
        size=chip_size,
        keep_empty=1.0,
        overwrite=True,
    )
    return root / "chips"


def write_by_blocks(
    path: Path,
    size: int,
    count: int,
    make_block: Callable[[np.random.Generator, int, int], np.ndarray],
    block: int = 1024,
    seed: int = 0,
) -> Path:
    """A ``size`` x ``size`` uint8 GeoTIFF filled block by block (bounded memory) with
    ``make_block(rng, height, width)`` arrays of shape (count, height, width)."""
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff", width=size, height=size, count=count, dtype="uint8", crs="EPSG:32633",
        transform=rasterio.Affine(0.5, 0, 500_000, 0, -0.5, 5_300_000), tiled=True,
        blockxsize=512, blockysize=512, compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                dst.write(make_block(rng, h, w), window=Window(col, row, w, h))
    return path
