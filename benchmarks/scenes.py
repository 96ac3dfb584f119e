"""Synthetic cadastre chips for the training benchmarks (generated, never stored)."""

from __future__ import annotations

from pathlib import Path

from geoseg.synthetic import synth
from geoseg.tiling import tile


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
