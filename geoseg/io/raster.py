"""Open and validate rasters (local files, URLs, GDAL paths), chip window grids, padded windowed
reads, band statistics."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import InputFileError, RasterError, first_line
from geoseg.io.remote import gdal_env, is_remote, local_file_missing

# rasterio.features warns about in-memory grids at pixel (0, 0) (an identity transform), and
# rasterize() run from several threads sometimes warns the same way though its result is correct
# (checked in tests against serial runs): noise either way.
warnings.filterwarnings(
    "ignore",
    message="(Dataset has no geotransform|The given matrix is equal to Affine.identity)",
    category=NotGeoreferencedWarning,
    module="rasterio.features",
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RasterInfo:
    """What geoseg needs to know about an input raster, read once from its header."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    transform: Affine
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster CRS, also for south-up rasters."""
        return box_bounds(self.transform, self.height, self.width)

    @property
    def pixel_size(self) -> float:
        """Mean absolute pixel size in CRS units."""
        t = self.transform
        return (math.hypot(t.a, t.d) + math.hypot(t.b, t.e)) / 2


@contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[rasterio.DatasetReader]:
    """Open a raster for reading: a local path, a URL or a GDAL path (see :mod:`geoseg.io.remote`).

    A remote raster is opened under GDAL's HTTP settings for windowed reads; call this in the
    thread or Dask task that reads. A raster that cannot be opened raises a one-line
    :class:`InputFileError` naming ``path``.
    """
    path = str(path)
    if local_file_missing(path):
        raise InputFileError(f"{path}: no such file")
    with gdal_env(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # callers check
                src = rasterio.open(path)
        except RasterioIOError as exc:
            raise InputFileError(f"{path}: {_open_failure(path, exc)}") from None
        with src:
            yield src


def _open_failure(path: str, exc: RasterioIOError) -> str:
    """Why ``path`` could not be opened, in a few words and GDAL's first line."""
    if is_remote(path):
        return f"cannot open the remote raster ({first_line(exc)})"
    return f"not a readable raster ({first_line(exc)})"


def open_raster_info(path: str | os.PathLike) -> RasterInfo:
    """Read and validate a raster's header: it must exist and carry a CRS and a geotransform."""
    path = str(path)
    with open_raster(path) as src:
        if src.crs is None:
            raise RasterError(f"{path}: raster has no CRS")
        if src.transform == Affine.identity():
            raise RasterError(f"{path}: raster has no geotransform (not georeferenced)")
        return RasterInfo(
            path=path,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            crs=src.crs,
            transform=src.transform,
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
        )


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own message behind a rasterio error: the last cause in its chain."""
    for _ in range(10):  # a chain is short; this only guards against a cycle
        if (exc.__cause__ or exc.__context__) is None:
            break
        exc = exc.__cause__ or exc.__context__
    return first_line(exc)


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn a failed pixel read (a truncated or corrupt file) into a one-line error naming it."""
    try:
        yield
    except RasterioIOError as exc:
        raise RasterError(f"{path}: cannot read pixels ({gdal_reason(exc)})") from None


def box_bounds(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a grid, whatever the signs of its pixel sizes."""
    xs, ys = transform @ (np.array([0, width, width, 0]), np.array([0, 0, height, height]))
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def window_offsets(length: int, size: int, stride: int) -> list[int]:
    """Offsets of windows of ``size`` every ``stride`` that together cover ``length`` pixels.

    The last window may run past the end (it is padded when read).
    """
    if length <= size:
        return [0]
    return [i * stride for i in range(math.ceil((length - size) / stride) + 1)]


def chip_windows(width: int, height: int, size: int, stride: int) -> list[Window]:
    """Row-major grid of ``size`` x ``size`` windows covering every pixel of the raster."""
    return [
        Window(col, row, size, size)
        for row in window_offsets(height, size, stride)
        for col in window_offsets(width, size, stride)
    ]


def block_windows(width: int, height: int, block_size: int) -> list[Window]:
    """Row-major ``block_size`` windows over the raster, the last ones cut at its edges."""
    whole = Window(0, 0, width, height)
    return [w.intersection(whole) for w in chip_windows(width, height, block_size, block_size)]


def all_valid(src: rasterio.DatasetReader) -> bool:
    """True when the source has no nodata, mask or alpha: every pixel is valid, unread."""
    return all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def read_padded(
    src: rasterio.DatasetReader, window: Window, indexes: list[int] | None = None
) -> tuple[np.ndarray, ...]:
    """Read ``window`` (which may extend past the raster) as a full-size array.

    Returns ``(data, valid, inside)``: data of shape (bands, h, w) in the source dtype, padded
    with the nodata value (or 0); boolean (h, w) arrays, True where the source has valid data and
    True inside the raster. ``indexes`` picks bands (1-based; default all).
    """
    height, width = int(window.height), int(window.width)
    fill = src.nodata if src.nodata is not None else 0
    indexes = list(indexes or range(1, src.count + 1))
    data = np.full((len(indexes), height, width), fill, dtype=src.dtypes[0])
    valid = np.zeros((height, width), dtype=bool)
    inner = window.intersection(Window(0, 0, src.width, src.height))
    r0, c0 = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
    h, w = int(inner.height), int(inner.width)
    with reading(src.name):
        data[:, r0 : r0 + h, c0 : c0 + w] = src.read(indexes, window=inner)
        if all_valid(src):
            valid[r0 : r0 + h, c0 : c0 + w] = True
        else:
            valid[r0 : r0 + h, c0 : c0 + w] = src.dataset_mask(window=inner) > 0
    finite = finite_pixels(data, src.name)
    if not finite.all():
        valid &= finite
        data[:, ~finite] = fill  # the declared nodata (which may be NaN itself), or 0
    inside = np.zeros_like(valid)
    inside[r0 : r0 + h, c0 : c0 + w] = True
    return data, valid, inside


_NOTED: set[str] = set()


def finite_pixels(data: np.ndarray, name: str) -> np.ndarray:
    """(h, w) True where every band of ``data`` (bands, h, w) is finite: NaN and infinite values
    are nodata wherever geoseg reads pixels, declared or not (noted once per raster)."""
    if not np.issubdtype(data.dtype, np.floating):
        return np.ones(data.shape[1:], dtype=bool)
    finite = np.isfinite(data).all(axis=0)
    if not finite.all() and name not in _NOTED:
        _NOTED.add(name)
        logger.warning("%s: NaN or infinite pixels are read as nodata", name)
    return finite


def sample_windows(width: int, height: int, size: int, max_windows: int) -> list[Window]:
    """Up to ``max_windows`` windows spread evenly over the raster, for statistics."""
    per_side = max(1, int(math.sqrt(max_windows)))
    w, h = min(size, width), min(size, height)
    cols = np.linspace(0, width - w, per_side).round().astype(int)
    rows = np.linspace(0, height - h, per_side).round().astype(int)
    unique = sorted({(int(r), int(c)) for r in rows for c in cols})
    return [Window(c, r, w, h) for r, c in unique]


def sample_valid_pixels(
    path: str,
    max_pixels: int = 200_000,
    window_size: int = 512,
    max_windows: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """A random sample of valid pixels, shape (bands, n), read from a few spread-out windows."""
    rng = np.random.default_rng(seed)
    chunks = []
    with open_raster(path) as src, reading(path):
        for window in sample_windows(src.width, src.height, window_size, max_windows):
            data = src.read(window=window)
            valid = (src.dataset_mask(window=window) > 0) & finite_pixels(data, path)
            chunks.append(data[:, valid])
    logger.debug("%s: %d valid pixels sampled", path, sum(c.shape[1] for c in chunks))
    pixels = np.concatenate(chunks, axis=1) if chunks else np.empty((0, 0))
    if pixels.shape[1] > max_pixels:
        pixels = pixels[:, rng.choice(pixels.shape[1], max_pixels, replace=False)]
    return pixels


def band_statistics(samples: list[np.ndarray]) -> list[dict[str, float]]:
    """Per-band robust normalisation statistics from pixel samples of one or more rasters.

    ``p2``/``p98`` suit any dtype (8-bit, 16-bit, signed); :func:`normalize` uses them.
    """
    found = [s.astype(np.float64) for s in samples if s.size]
    if not found:
        raise RasterError(
            "no valid pixels found to compute band statistics (every pixel is nodata)"
        )
    pixels = np.concatenate(found, axis=1)
    p = np.percentile(pixels, [2, 50, 98], axis=1)
    return [
        {
            "min": float(pixels[b].min()),
            "max": float(pixels[b].max()),
            "mean": float(pixels[b].mean()),
            "std": float(pixels[b].std()),
            "p2": float(p[0, b]),
            "p50": float(p[1, b]),
            "p98": float(p[2, b]),
        }
        for b in range(pixels.shape[0])
    ]


GDAL_CACHE_BYTES = 256 * 2**20
"""GDAL's block cache while predict and vectorize stream a raster. GDAL's default (5 % of the
machine's memory) fills with written and read blocks, so the resident memory of a long run grows
with the raster up to that size."""


NORMALIZED_RANGE = (-1.0, 2.0)
"""Normalised values are clipped to this range: p2 maps to 0, p98 to 1, outliers stay bounded."""


def normalization_constants(normalization: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(low, scale)`` float32 arrays: a model input is ``(x - low) * scale``."""
    bands = normalization["bands"]
    low = np.array([b[normalization["low"]] for b in bands], dtype=np.float32)
    high = np.array([b[normalization["high"]] for b in bands], dtype=np.float32)
    return low, 1.0 / np.maximum(high - low, np.finfo(np.float32).eps)


def normalize(data: np.ndarray, valid: np.ndarray | None, normalization: dict) -> np.ndarray:
    """Source values (bands, h, w) of any dtype -> model input (h, w, bands) float32.

    Each band is scaled so its ``low`` statistic (p2) becomes 0 and its ``high`` (p98) 1, using
    the ``normalization`` record of dataset.json / geoseg.json, then clipped to
    :data:`NORMALIZED_RANGE`; invalid pixels become 0.
    """
    low, scale = normalization_constants(normalization)
    if len(low) != data.shape[0]:
        raise RasterError(f"{data.shape[0]} bands given, the normalisation has {len(low)}")
    image = np.moveaxis(data, 0, -1).astype(np.float32)
    image = np.clip((image - low) * scale, *NORMALIZED_RANGE)
    if valid is not None:
        image[~valid] = 0.0
    return image
