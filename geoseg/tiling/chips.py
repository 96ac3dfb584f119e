"""Cut one block of chips from a scene: read, burn masks, decide to keep, write GeoTIFFs.

This is the unit of work that runs in a Dask task; it opens its own raster handle and loads
labels through the per-process cache, so it runs the same on threads or cluster workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.windows import Window, union
from rasterio.windows import transform as window_transform

from geoseg.errors import ParameterError
from geoseg.io.raster import open_raster, read_padded
from geoseg.labels.masks import IGNORE, LabelSpec, open_labels
from geoseg.tiling.chip_files import UnexpectedLayout, chip_block_size, write_stacked

logger = logging.getLogger(__name__)

CODECS = ("zstd", "deflate", "lzw", "none")
DEFAULT_CODEC = "zstd"
"""Chips are written at ZSTD level 1 by default: as small as DEFLATE's, faster to write and
to read back in training (bench_tile.py, docs/benchmarks.md)."""
STACK_BYTES = 64 * 2**20
"""Chips written together go through one GDAL file of at most this many bytes of pixels (a
block of 16 chips of 256 px in 3 bytes is 3 MiB)."""
CODEC_OPTIONS = {
    "zstd": {"compress": "zstd", "zstd_level": 1},
    "deflate": {"compress": "deflate", "zlevel": 1},  # the size of level 6, 10-20 % faster
    "lzw": {"compress": "lzw"},
    "none": {},
}


@dataclass(frozen=True)
class Chip:
    """One planned chip: its scene, pixel offsets, split, and its seeded keep-if-empty draw.

    ``split`` is "" until the split is assigned, after cutting (it depends on the kept chips).
    """

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
    compress: str = DEFAULT_CODEC


@dataclass
class ChipResult:
    """What happened to one chip; kept chips carry their pixel counts."""

    chip: Chip
    status: str  # "kept", "nodata", "empty"; after the split also "split" (overlaps another)
    nodata_fraction: float
    positives: list[int] = field(default_factory=list)
    """Per mask band: a class's positive pixels; a regression target's sum of stored values."""
    labelled: int = 0


def cut_chips(path: str, chips: list[Chip], rules: ChipRules, out_dir: str) -> list[ChipResult]:
    """Cut, sample and write ``chips`` of the raster at ``path`` into ``out_dir``.

    The chips' bounding window is read and burned once, so that a feature crossing chips is
    rasterised once; every pixel lies on the raster's grid either way. The kept chips are
    written together (:func:`~geoseg.tiling.chip_files.write_stacked`).
    """
    start = time.perf_counter()
    labels = open_labels(rules.labels) if rules.labels else None
    results = []
    images, mask_chips = _Pending(), _Pending()
    with open_raster(path) as src:
        area = union([Window(c.col, c.row, rules.size, rules.size) for c in chips])
        area_transform = window_transform(area, src.transform)
        block, block_valid, block_inside = read_padded(src, area)
        masks = None
        if labels is not None:
            pixel_size = (src.res[0] + src.res[1]) / 2
            masks = labels.burn(
                src.crs, area_transform, block_valid.shape, pixel_size, grid=src.transform
            )
            masks[:, ~block_valid] = IGNORE
            is_class = [t["kind"] == "class" for t in labels.targets.values()]
        for chip in chips:
            r, c = chip.row - int(area.row_off), chip.col - int(area.col_off)
            view = np.s_[r : r + rules.size, c : c + rules.size]
            valid, inside = block_valid[view], block_inside[view]  # padding is not nodata
            nodata_fraction = 1.0 - np.count_nonzero(valid) / np.count_nonzero(inside)
            if nodata_fraction > rules.max_nodata:
                results.append(ChipResult(chip, "nodata", nodata_fraction))
                continue
            transform = window_transform(
                Window(chip.col, chip.row, rules.size, rules.size), src.transform
            )
            positives, labelled = [], 0
            if masks is not None:
                mask = masks[(slice(None), *view)]
                positives = band_totals(mask, is_class)
                labelled = int((mask[0] != IGNORE).sum())
                empty = not any(n for n, c in zip(positives, is_class) if c)
                # with sparse labels, a chip beyond the reach of every feature teaches nothing
                unknown = rules.labels.sparse_reach is not None and not labelled
                if empty and (chip.draw >= rules.keep_empty or unknown):
                    results.append(ChipResult(chip, "empty", nodata_fraction))
                    continue
                mask_chips.add(Path(out_dir) / "masks" / f"{chip.id}.tif", mask, transform)
            needs_mask = src.nodata is None and not valid.all()
            images.add(
                Path(out_dir) / "images" / f"{chip.id}.tif",
                block[(slice(None), *view)],
                transform,
                valid if needs_mask else None,
            )
            results.append(ChipResult(chip, "kept", nodata_fraction, positives, labelled))
        _write_kept(src, rules, images, mask_chips, labels)
    logger.debug(
        "%s: block at row %d, col %d: %d of %d chips kept in %.2f s",
        Path(path).name,
        int(area.row_off),
        int(area.col_off),
        sum(r.status == "kept" for r in results),
        len(chips),
        time.perf_counter() - start,
    )
    return results


def _write_kept(src, rules: ChipRules, images: _Pending, masks: _Pending, labels) -> None:
    """Write a block's kept image chips and, with labels, their mask chips."""
    size, codec = rules.size, rules.compress
    profile = chip_profile(src.crs, src.count, src.dtypes[0], size, src.nodata, codec)
    images.write(profile, src.descriptions)
    if labels is not None:
        classes = len(labels.classes)
        profile = chip_profile(src.crs, classes, "uint8", size, IGNORE, codec, mask=True)
        masks.write(profile, tuple(labels.classes))


def band_totals(mask: np.ndarray, is_class: list[bool]) -> list[int]:
    """Per band: positive pixels of a class, or the sum of a regression target's stored values
    over labelled pixels."""
    totals = []
    for band, cls in zip(mask, is_class):
        if cls:
            totals.append(int((band == 1).sum()))
        else:
            totals.append(int(band[band != IGNORE].sum(dtype=np.int64)))
    return totals


def check_codec(codec: str) -> None:
    """Refuse a chip codec that is unknown or that this GDAL build cannot write."""
    if codec not in CODECS:
        raise ParameterError(f"`compress` must be one of {', '.join(CODECS)}, got {codec!r}")
    if not gdal_writes(CODEC_OPTIONS[codec]):
        usable = [c for c in CODECS if gdal_writes(CODEC_OPTIONS[c])]
        raise ParameterError(
            f"`compress` {codec}: this GDAL build ({rasterio.__gdal_version__}) cannot write "
            f"{codec.upper()} GeoTIFFs; choose one of {', '.join(usable)}"
        )


def gdal_writes(options: dict) -> bool:
    """Whether GDAL creates a small GeoTIFF with these creation options."""
    profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint8", **options)
    profile |= {"crs": "EPSG:4326", "transform": from_origin(0, 16, 1, 1)}
    try:
        with MemoryFile() as memory, memory.open(**profile) as dst:
            dst.write(np.zeros((1, 16, 16), np.uint8))
    except RasterioError:
        return False
    return True


def chip_profile(
    crs, count: int, dtype: str, size: int, nodata, codec: str, mask: bool = False
) -> dict:
    """The creation profile of one image chip, or of a ``mask`` chip (without its transform).

    Bands are stored one after the other (faster to write than interleaved by pixel, as fast
    to read); integer images are compressed with a predictor, which makes noisy imagery a
    quarter smaller; masks without one, which makes them smaller and faster (bench_tile.py).
    """
    block = chip_block_size(size)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype=dtype,
        crs=crs,
        nodata=nodata,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        interleave="band",
        **CODEC_OPTIONS[codec],
    )
    if codec != "none" and not mask and np.issubdtype(np.dtype(dtype), np.integer):
        profile["predictor"] = 2
    return profile


@dataclass
class _Pending:
    """Kept chips of a block waiting to be written, all of one kind (images or masks)."""

    paths: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    transforms: list = field(default_factory=list)
    valid: list[np.ndarray | None] = field(default_factory=list)

    def add(self, path: Path, data: np.ndarray, transform, valid=None) -> None:
        """Queue a chip; ``valid`` (for chips that need one) becomes an internal mask."""
        for queue, value in zip(
            (self.paths, self.arrays, self.transforms, self.valid), (path, data, transform, valid)
        ):
            queue.append(value)

    def write(self, profile: dict, descriptions=None) -> None:
        """Write the chips, a group at a time (one by one if GDAL's file cannot be split)."""
        try:
            for group in self._groups():
                masked = self.valid[group[0]] is not None
                write_stacked(
                    [self.paths[i] for i in group],
                    [self.arrays[i] for i in group],
                    [self.transforms[i] for i in group],
                    profile,
                    descriptions,
                    [self.valid[i] for i in group] if masked else None,
                )
        except UnexpectedLayout as exc:
            logger.debug("chips written one by one: %s", exc)
            for path, data, transform, valid in zip(
                self.paths, self.arrays, self.transforms, self.valid
            ):
                _write_tiff(path, profile | {"transform": transform}, data, descriptions, valid)

    def _groups(self) -> list[list[int]]:
        """Chips written together: those with an internal mask apart from the others, at most
        :data:`STACK_BYTES` of pixels in a group."""
        groups = []
        for masked in (False, True):
            chosen = [i for i, v in enumerate(self.valid) if (v is not None) == masked]
            if chosen:
                size = max(1, STACK_BYTES // self.arrays[chosen[0]].nbytes)
                groups += [chosen[at : at + size] for at in range(0, len(chosen), size)]
        return groups


def _write_tiff(path: Path, profile: dict, data: np.ndarray, descriptions, valid=None) -> None:
    """Write one GeoTIFF; ``valid`` becomes an internal mask."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions is not None:
            dst.descriptions = descriptions
        if valid is not None:
            dst.write_mask(valid.astype(np.uint8) * 255)
