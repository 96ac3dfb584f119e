"""Cut one block of chips from a scene: read, burn masks, decide to keep, write GeoTIFFs.

This is the unit of work that runs in a Dask task; it opens its own raster handle and loads
labels through the per-process cache, so it runs the same on threads or cluster workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.labels import IGNORE, LabelSpec, open_labels
from geoseg.raster import read_padded


@dataclass(frozen=True)
class Chip:
    """One planned chip: its scene, pixel offsets, split, and its seeded keep-if-empty draw."""

    scene: str
    row: int
    col: int
    split: str
    draw: float

    @property
    def id(self) -> str:
        return f"{self.scene}_{self.row}_{self.col}"


@dataclass(frozen=True)
class ChipRules:
    """Sampling and output settings shared by every chip of a run."""

    size: int
    keep_empty: float
    max_nodata: float
    labels: LabelSpec | None


@dataclass
class ChipResult:
    """What happened to one chip; kept chips carry their pixel counts."""

    chip: Chip
    status: str  # "kept", "nodata" or "empty"
    nodata_fraction: float
    positives: list[int] = field(default_factory=list)
    labelled: int = 0


def cut_chips(path: str, chips: list[Chip], rules: ChipRules, out_dir: str) -> list[ChipResult]:
    """Cut, sample and write ``chips`` of the raster at ``path`` into ``out_dir``."""
    labels = open_labels(rules.labels) if rules.labels else None
    results = []
    with rasterio.open(path) as src:
        pixel_size = (src.res[0] + src.res[1]) / 2
        for chip in chips:
            window = Window(chip.col, chip.row, rules.size, rules.size)
            data, valid, inside = read_padded(src, window)
            nodata_fraction = float(1.0 - valid.sum() / inside.sum())  # padding is not nodata
            if nodata_fraction > rules.max_nodata:
                results.append(ChipResult(chip, "nodata", nodata_fraction))
                continue
            transform = window_transform(window, src.transform)
            mask = None
            if labels is not None:
                mask = labels.burn(src.crs, transform, valid.shape, pixel_size)
                mask[:, ~valid] = IGNORE
                positives = [int(n) for n in (mask == 1).sum(axis=(1, 2))]
                labelled = int((mask[0] != IGNORE).sum())
                if not any(positives) and chip.draw >= rules.keep_empty:
                    results.append(ChipResult(chip, "empty", nodata_fraction))
                    continue
            else:
                positives, labelled = [], 0
            _write_image(Path(out_dir) / "images" / f"{chip.id}.tif", src, data, valid, transform)
            if mask is not None:
                _write_mask(
                    Path(out_dir) / "masks" / f"{chip.id}.tif", src, mask, transform, labels.classes
                )
            results.append(ChipResult(chip, "kept", nodata_fraction, positives, labelled))
    return results


def _profile(src, count: int, dtype: str, transform, size: int, nodata) -> dict:
    block = min(size, 512)
    predictor = 2 if np.issubdtype(np.dtype(dtype), np.integer) else 1
    return dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype=dtype,
        crs=src.crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
        predictor=predictor,
    )


def _write_image(path: Path, src, data: np.ndarray, valid: np.ndarray, transform) -> None:
    profile = _profile(src, data.shape[0], data.dtype.name, transform, data.shape[-1], src.nodata)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = src.descriptions
        if src.nodata is None and not valid.all():
            dst.write_mask(valid.astype(np.uint8) * 255)


def _write_mask(path: Path, src, mask: np.ndarray, transform, classes: list[str]) -> None:
    profile = _profile(src, mask.shape[0], "uint8", transform, mask.shape[-1], IGNORE)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask)
        dst.descriptions = tuple(classes)
