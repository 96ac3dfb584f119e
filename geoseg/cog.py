"""Stream blocks into a GeoTIFF and publish it as a Cloud-Optimised GeoTIFF under its final name.

GDAL's COG driver only copies a finished dataset, so blocks go to a hidden tiled GeoTIFF first;
once it is complete it is copied to a hidden COG (tiled, compressed, with overviews) which is then
renamed to the requested path. An interrupted run leaves no file under that name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio
import rasterio.shutil

from geoseg.outputs import check_output
from geoseg.raster import GDAL_CACHE_BYTES

COG_OPTIONS = dict(
    compress="DEFLATE",
    predictor=2,
    blocksize=512,
    overview_resampling="average",
    bigtiff="IF_SAFER",
)


def hidden_sibling(path: Path, suffix: str) -> Path:
    """A hidden, unique path next to ``path`` for work in progress."""
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}{suffix}"


@contextmanager
def staged_cog(path: str | os.PathLike, profile: dict, overwrite: bool) -> Iterator:
    """Yield a writable rasterio dataset; on success it becomes the COG at ``path``.

    ``profile`` holds width, height, count, dtype, crs and transform. Blocks can be written in
    any order; a per-dataset mask (``write_mask``) carries nodata into the COG.
    """
    path = check_output(path, overwrite).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    draft, final = hidden_sibling(path, ".tif"), hidden_sibling(path, ".cog.tif")
    options = dict(
        driver="GTiff",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="DEFLATE",
        zlevel=1,
        bigtiff="IF_SAFER",
    )
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            with rasterio.open(draft, "w", **{**options, **profile}) as dst:
                yield dst
            rasterio.shutil.copy(draft, final, driver="COG", **COG_OPTIONS)
        os.replace(final, path)
    finally:
        for leftover in (draft, final):
            leftover.unlink(missing_ok=True)
