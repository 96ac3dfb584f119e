"""Stream blocks into a GeoTIFF and publish it as a Cloud-Optimised GeoTIFF under its final name.

GDAL's COG driver only copies a finished dataset, so blocks go to a hidden tiled GeoTIFF first
(``.NAME.partial.tif``); once it is complete it is copied to a hidden COG (tiled, compressed,
with overviews) which is then renamed to the requested path. An interrupted run leaves no file
under that name.

The hidden draft can be resumed: a journal next to it (``.NAME.partial.json``) records the run's
identity and the blocks written so far. It is rewritten whenever the draft is closed: at the end
of a failed or interrupted run and every :data:`CHECKPOINT_SECONDS` (the draft is closed and
reopened so that the blocks are on disk), so a hard crash loses at most that much work.

A class map (``geoseg predict --class-map``) goes the same way, with a colour table
(:func:`class_colormap`), nodata instead of a mask and overviews by the most frequent class.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import time
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geoseg.errors import OutputExistsError, ParameterError
from geoseg.io.outputs import (
    check_output,
    hidden_sibling,
    output_lock,
    publish,
    write_failure,
    write_text_atomically,
)
from geoseg.io.raster import GDAL_CACHE_BYTES

logger = logging.getLogger(__name__)

COG_OPTIONS = dict(
    compress="DEFLATE",
    predictor=2,
    blocksize=512,
    overview_resampling="average",
    bigtiff="IF_SAFER",
)
DRAFT_OPTIONS = dict(
    driver="GTiff",
    tiled=True,
    blockxsize=512,
    blockysize=512,
    compress="DEFLATE",
    zlevel=1,
    bigtiff="IF_SAFER",
)
CLASS_MAP_COG_OPTIONS = dict(overview_resampling="mode")
"""Class codes are categories: an overview pixel takes the most frequent class beneath it."""
CHECKPOINT_SECONDS = 60.0

BACKGROUND_COLOUR = (200, 200, 200)
"""A light neutral grey, so the classes stand out."""
CLASS_COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
    (247, 182, 210), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
"""Matplotlib's tab20 without its greys: distinct on a map and in a legend."""


def class_colour(code: int) -> tuple[int, int, int]:
    """The RGB colour of class code ``code`` (0 = background) in a class map."""
    if code == 0:
        return BACKGROUND_COLOUR
    if code <= len(CLASS_COLOURS):
        return CLASS_COLOURS[code - 1]
    hue = (code * 0.618034) % 1.0  # golden-ratio steps keep neighbouring codes apart
    return tuple(round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.65, 0.85))


def class_colormap(count: int, nodata: int) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table for codes 0 .. count - 1; ``nodata`` transparent."""
    table = {code: (*class_colour(code), 255) for code in range(count)}
    table[nodata] = (0, 0, 0, 0)
    return table


def partial_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The resumable draft and its journal for an output at ``path``."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.partial.tif", path.parent / f".{path.name}.partial.json"


def verify_raster(path: str | os.PathLike) -> None:
    """Raise unless ``path`` opens and the last block of every level (full resolution and each
    overview), pixels and mask, reads: the parts a truncated or half-written file lacks."""
    with rasterio.open(path) as dataset:
        levels = len(dataset.overviews(1))
    for level in (None, *range(levels)):
        options = {} if level is None else {"overview_level": level}
        with rasterio.open(path, **options) as dataset:
            height, width = dataset.block_shapes[0]
            row = (dataset.height - 1) // height * height
            col = (dataset.width - 1) // width * width
            window = Window(
                col, row, min(width, dataset.width - col), min(height, dataset.height - row)
            )
            dataset.read(window=window)
            dataset.read_masks(1, window=window)


class StagedCog:
    """A COG written block by block under a hidden name; resumable after an interruption.

    ``profile`` holds width, height, count, dtype, crs and transform (and nodata, for a
    raster without a mask); ``identity`` is a JSON-able record of everything that decides the
    pixels: ``resume`` continues a draft only when its identity is the same. ``cog_options``
    override :data:`COG_OPTIONS`. Use as a context manager: on success the COG appears at
    ``path``; on failure the draft and its journal stay for a resume (or go, if no block was
    written).
    """

    def __init__(
        self,
        path,
        profile: dict,
        identity: dict,
        *,
        overwrite: bool = False,
        resume: bool = False,
        cog_options: dict | None = None,
    ):
        self.path = Path(path).absolute()
        self.profile, self.identity = profile, identity
        self.cog_options = {**COG_OPTIONS, **(cog_options or {})}
        self.overwrite, self.resume = overwrite, resume
        self.draft, self.journal = partial_paths(self.path)
        self.done: set[int] = set()
        self.dataset = None
        self._checkpointed = time.monotonic()

    def __enter__(self) -> StagedCog:
        self._lock = output_lock(self.path)
        self._lock.__enter__()
        try:
            return self._start()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _start(self) -> StagedCog:
        check_output(self.path, self.overwrite)
        if self.journal.is_file() and self.draft.is_file():
            self._take_over_partial()
        else:
            if self.resume:
                logger.info("nothing to resume for %s: starting from the first block", self.path)
            self._discard_partial()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open("r+" if self.done else "w")
        return self

    def _take_over_partial(self) -> None:
        record = json.loads(self.journal.read_text())
        if not self.resume:
            if not self.overwrite:
                raise OutputExistsError(
                    f"an interrupted run towards {self.path} is in {self.draft.name} "
                    f"({len(record['done'])} blocks): add `resume` to continue it or "
                    "`overwrite` to start again"
                )
            self._discard_partial()
            return
        changed = [k for k in {*record["identity"], *self.identity}
                   if record["identity"].get(k) != self.identity.get(k)]  # fmt: skip
        if changed:
            key = sorted(changed)[0]
            raise ParameterError(
                f"`resume` needs the interrupted run's inputs and options: `{key}` was "
                f"{record['identity'].get(key)!r}, now {self.identity.get(key)!r}"
            )
        self.done = set(record["done"])
        logger.info("resuming %s: %d blocks already written", self.path, len(self.done))

    def _discard_partial(self) -> None:
        self.draft.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)

    def _open(self, mode: str) -> None:
        with self._env():
            if mode == "w":
                self.dataset = rasterio.open(self.draft, "w", **{**DRAFT_OPTIONS, **self.profile})
            else:
                self.dataset = rasterio.open(self.draft, "r+")

    def _env(self) -> rasterio.Env:
        return rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_BYTES)

    def _close(self) -> None:
        if self.dataset is not None:
            with self._env():
                self.dataset.close()
            self.dataset = None

    def _write_journal(self) -> None:
        record = {"identity": self.identity, "done": sorted(self.done)}
        write_text_atomically(self.journal, json.dumps(record))

    def write_block(self, index: int, data, mask, window) -> None:
        """Write block ``index`` (bands and a 0/255 validity mask, or None for a raster whose
        nodata value marks invalid pixels) at ``window``."""
        try:
            with self._env():
                self.dataset.write(data, window=window)
                if mask is not None:
                    self.dataset.write_mask(mask, window=window)
        except Exception as exc:
            self.done.clear()  # what is on disk cannot be trusted for a resume
            raise write_failure(self.path, exc) from None
        self.done.add(index)
        if time.monotonic() - self._checkpointed > CHECKPOINT_SECONDS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Put the blocks written so far on disk and record them in the journal."""
        try:
            self._close()
            verify_raster(self.draft)
        except Exception as exc:
            self.done.clear()
            raise write_failure(self.path, exc) from None
        self._write_journal()
        self._open("r+")
        self._checkpointed = time.monotonic()

    def __exit__(self, kind, error, trace) -> None:
        try:
            self._finish(kind)
        finally:
            self._lock.__exit__(None, None, None)

    def _finish(self, kind) -> None:
        try:
            self._close()
            if kind is None:
                verify_raster(self.draft)
        except Exception as exc:
            self._discard_partial()  # its blocks cannot be trusted for a resume
            if kind is None:
                raise write_failure(self.path, exc) from None
            return
        if kind is not None:
            if self.done:
                self._write_journal()
                logger.info("kept %d written blocks in %s for `resume`", len(self.done), self.draft)
            else:
                self._discard_partial()
            return
        final = hidden_sibling(self.path, ".cog.tif")
        try:
            with self._env():
                rasterio.shutil.copy(self.draft, final, driver="COG", **self.cog_options)
        except Exception as exc:  # GDAL's own errors (CPLE_*) are not all RasterioErrors
            final.unlink(missing_ok=True)
            self._write_journal()  # the draft is whole: --resume only copies it again
            raise write_failure(self.path, exc) from None
        try:
            publish(final, self.path, verify_raster)
        except Exception:
            self._write_journal()
            raise
        self._discard_partial()
