"""Predict class probabilities over a raster of any size.

The raster is cut into blocks, one Dask task each. A task reads its block with a halo, runs every
chip of a raster-wide grid of overlapping chips that touches the block, and blends their outputs
with a smooth window (highest at the chip centre). Chip positions depend on the raster only, so
the result does not depend on the block size. Blocks go to one writer as they complete.

A multiclass model's class map holds the likeliest class of each pixel, taken from the blended
float probabilities in the block task (before they are quantised to uint8), so it does not
depend on the block size either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from dask import delayed
from rasterio.windows import Window

from geoseg.contracts import (
    CARD_NAME,
    CLASS_MAP_NODATA,
    MODEL_NAME,
    ClassMapTags,
    ModelCard,
    PredictionTags,
    read_model_card,
)
from geoseg.delineation.polygon_settings import PolygonSettings
from geoseg.errors import Interrupted, ParameterError, RasterError
from geoseg.io.cog import CLASS_MAP_COG_OPTIONS, StagedCog, class_colormap, partial_paths
from geoseg.io.outputs import check_apart, check_output
from geoseg.io.raster import (
    RasterInfo,
    block_windows,
    normalize,
    open_raster,
    open_raster_info,
    read_padded,
)
from geoseg.io.remote import absolute, is_gdal_path
from geoseg.metrics.scores import quantize, resolve_thresholds
from geoseg.models.forward import ForwardSpec, file_version, forward_pass
from geoseg.models.sliding_window import ChipGrid, blend_chips
from geoseg.parallel import Progress, check_scheduler, compute_each

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockJob:
    """Everything a block task needs besides its window; small and picklable."""

    image: str
    width: int
    height: int
    grid: ChipGrid
    classes: int
    normalization: dict = field(hash=False)
    forward: ForwardSpec
    class_map: bool = False
    """Also the likeliest class of each pixel (a multiclass model's class map)."""
    dates: tuple[str, ...] = ()
    """Further dates of ``image`` (same grid): their probabilities are combined per pixel."""
    consensus: str = "mean"


@dataclass(frozen=True)
class RasterRun:
    """One run's rasters to predict: the inputs, the model, and how to cut and run them."""

    image: str | Path
    dates: tuple
    """Further dates of ``image``, combined per pixel by ``consensus``."""
    consensus: str
    model: str | Path
    card: ModelCard
    info: RasterInfo
    thresholds: dict
    identity: dict
    """What makes two runs the same run, for ``resume`` (:func:`run_identity`)."""
    grid: ChipGrid
    block_size: int
    forward: ForwardSpec


@dataclass
class BlockResult:
    index: int
    window: Window
    probabilities: np.ndarray  # (classes, h, w) uint8, 0 where invalid
    valid: np.ndarray  # (h, w) bool
    chips: int
    codes: np.ndarray | None = None  # (h, w) uint8 class codes, CLASS_MAP_NODATA where invalid


def class_codes(probabilities: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The likeliest class of each pixel of (h, w, classes) probabilities, as uint8 codes;
    :data:`CLASS_MAP_NODATA` where not ``valid``. Ties go to the first class."""
    codes = np.argmax(probabilities, axis=-1).astype(np.uint8)
    codes[~valid] = CLASS_MAP_NODATA
    return codes


CONSENSUS = ("mean", "median")


def combine_dates(blends: list[np.ndarray], valids: list[np.ndarray], how: str = "mean"):
    """The per-pixel mean (or median) of several dates' (h, w, classes) probabilities, each date
    counted only where it is valid; and where any date is valid."""
    if len(blends) == 1:
        return blends[0], valids[0]
    stacked, valid = np.stack(blends), np.stack(valids)
    seen = valid.any(axis=0)
    if how == "median":
        masked = np.where(valid[..., None], stacked, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pixels no date sees
            combined = np.nanmedian(masked, axis=0)
        return np.nan_to_num(combined, nan=0.0).astype(np.float32), seen
    counts = valid.sum(axis=0)[..., None]
    total = (stacked * valid[..., None]).sum(axis=0)
    return (total / np.maximum(counts, 1)).astype(np.float32), seen


def predict_block(job: BlockJob, window: Window, index: int = 0) -> BlockResult:
    """Blended probabilities of the chips touching ``window`` (combined over the dates)."""
    blends, valids, chips = [], [], 0
    for image in (job.image, *job.dates):
        blended, inside, count = _blend_image(job, image, window)
        blends.append(blended)
        valids.append(inside)
        chips += count
    blended, inside = combine_dates(blends, valids, job.consensus)
    probabilities = np.moveaxis(quantize(blended), -1, 0)
    probabilities[:, ~inside] = 0
    codes = class_codes(blended, inside) if job.class_map else None
    return BlockResult(index, window, probabilities, inside, chips, codes)


def _blend_image(job: BlockJob, path: str, window: Window):
    """(h, w, classes) float probabilities of one image over ``window``, its validity, and the
    number of chips run."""
    size = job.grid.size
    top, left = int(window.row_off), int(window.col_off)
    bottom, right = top + int(window.height), left + int(window.width)
    rows = job.grid.touching(job.height, top, bottom)
    cols = job.grid.touching(job.width, left, right)
    r0, c0 = int(rows[0]), int(cols[0])
    read = Window(c0, r0, int(cols[-1]) + size - c0, int(rows[-1]) + size - r0)
    with open_raster(path) as src:
        data, valid, _ = read_padded(src, read)
    image = normalize(data, valid, job.normalization)
    origins = [
        (int(r) - r0, int(c) - c0)
        for r in rows
        for c in cols
        if valid[r - r0 : r - r0 + size, c - c0 : c - c0 + size].any()
    ]
    region = (top - r0, left - c0, bottom - top, right - left)
    forward, batch_size = forward_pass(job.forward), job.forward.batch_size
    blended = blend_chips(image, origins, size, forward, batch_size, job.classes, region)
    inside = valid[top - r0 : bottom - r0, left - c0 : right - c0]
    return blended, inside, len(origins)


@dataclass
class PredictSummary:
    """What ``predict`` produced, and how fast."""

    out: Path
    width: int
    height: int
    blocks: int
    chips: int
    seconds: float
    device: str
    precision: str
    vectors: object | None = None  # a VectorizeSummary when polygons were written
    resumed_blocks: int = 0
    class_map: Path | None = None

    @property
    def chips_per_second(self) -> float:
        return self.chips / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if not self.blocks:  # an interrupted run had finished the rasters
            lines = [f"probabilities: {self.out} (complete before the resume)"]
            if self.class_map is not None:
                lines.append(f"class map: {self.class_map} (complete before the resume)")
            if self.vectors is not None:
                lines.append(self.vectors.describe())
            return "\n".join(lines)
        resumed = f", {self.resumed_blocks} blocks resumed" if self.resumed_blocks else ""
        lines = [
            f"predicted {self.width * self.height:,} pixels ({self.width} x {self.height}) in "
            f"{self.blocks} blocks: {self.chips:,} chips in {self.seconds:.1f} s "
            f"({self.chips_per_second:.1f} chips/s, {self.precision} on {self.device}{resumed})",
            f"probabilities: {self.out}",
        ]
        if self.class_map is not None:
            lines.append(f"class map: {self.class_map}")
        if self.vectors is not None:
            lines.append(self.vectors.describe())
        return "\n".join(lines)


def predict(
    image: str | Path | Sequence[str | Path],
    model: str | Path,
    out: str | Path,
    *,
    consensus: str = "mean",
    vectors: str | Path | None = None,
    class_map: str | Path | None = None,
    threshold: float | None = None,
    overlap: int | None = None,
    batch_size: int = 32,
    block_size: int = 2048,
    tta: bool = False,
    mode: str = "regions",
    extent_threshold: float | None = None,
    marker_threshold: float | None = None,
    parcel_threshold: float | None = None,
    split: float | None = None,
    join: float | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "auto",
    mixed_precision: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PredictSummary:
    """Predict every pixel of ``image`` with the model in ``model`` (a ``geoseg train`` folder).

    Writes a Cloud-Optimised GeoTIFF of uint8 probabilities (0..255, one band per class, named after
    it; nodata where the image is nodata; a multiclass model's softmax with background first) and,
    with ``vectors``, polygons (see :func:`geoseg.vectorize`). ``class_map`` (multiclass models
    only) also writes a uint8 COG of each pixel's likeliest class: codes 0 (background) .. N in the
    card's class order, 255 where the image is nodata, with a colour table. A multiclass model's
    polygons come from the class map, or without one from the likeliest band of the probabilities.
    ``overlap`` defaults to a quarter of the model's chip size (64 px for 256 px chips). An
    interrupted run (:class:`geoseg.errors.Interrupted`) keeps the blocks it wrote: ``resume``
    continues it (with the same inputs and options) and gives the same COGs as an uninterrupted run.
    Several images are dates of one place (on one grid): each is predicted and the probabilities are
    combined per pixel by their ``consensus`` (``mean`` or ``median``) over the dates valid there,
    in the same pass over blocks. Returns a :class:`PredictSummary`.
    """
    card = read_model_card(model)
    image, *dates = [image] if isinstance(image, (str, os.PathLike)) else list(image)
    info = open_raster_info(image)
    chip = card.chip_size
    _check_bands(image, info, card, dated=bool(dates))
    _check_dates(dates, info, card, consensus)
    if overlap is None:
        overlap = chip // 4
    _check_options(chip, overlap, block_size, batch_size)
    thresholds = _thresholds(card, threshold)
    _check_class_map(card, model, class_map)
    polygons = PolygonSettings(
        mode, threshold, extent_threshold, marker_threshold, parcel_threshold, split, join,
        min_area, simplify,
    )  # fmt: skip
    _check_outputs([image, *dates], model, out, vectors, class_map, polygons, block_size, card)
    identity = run_identity(
        image, model, overlap=overlap, block_size=block_size, batch_size=batch_size, tta=tta,
        device=device, mixed_precision=mixed_precision, threshold=threshold,
        **({"class_map": True} if class_map is not None else {}),  # its pixels, not its path
        **({"dates": _versions(dates), "consensus": consensus} if dates else {}),
    )  # fmt: skip
    rasters = _rasters_to_write(out, class_map, identity, resume, overwrite)
    if vectors is not None:
        check_output(vectors, overwrite or resume)
    check_scheduler(scheduler)  # before the model loads (seconds)
    try:
        if rasters:
            forward = ForwardSpec.from_card(
                model, card, batch_size=batch_size, tta=tta, device=device,
                precision=mixed_precision,
            )  # fmt: skip
            run = RasterRun(image, tuple(dates), consensus, model, card, info, thresholds,
                            identity, ChipGrid(chip, overlap), block_size, forward)  # fmt: skip
            summary = _predict_raster(run, rasters, workers, scheduler, resume, progress)
        else:
            logger.info("%s is complete from the interrupted run: polygons only", out)
            summary = PredictSummary(Path(out), info.width, info.height, 0, 0, 0.0, "-", "-")
            summary.class_map = None if class_map is None else Path(class_map)
        if vectors is not None:
            from geoseg.delineation.vectorizing import vectorize

            summary.vectors = vectorize(
                out if class_map is None else class_map, vectors, **polygons.to_kwargs(),
                block_size=block_size, workers=workers, scheduler=scheduler,
                overwrite=overwrite or resume, progress=progress,
            )  # fmt: skip
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    return summary


def _interrupted(out) -> Interrupted:
    """What an interrupted prediction of ``out`` kept: blocks to resume from, or nothing."""
    draft, journal = partial_paths(out)
    if journal.is_file():
        message = f"interrupted; the blocks written are kept in {draft}: add `resume` to continue"
        return Interrupted(message, True)
    return Interrupted("interrupted before any block was written", False)


def _rasters_to_write(out, class_map, identity: dict, resume: bool, overwrite: bool):
    """The rasters to predict: none when the resumed run had finished them all (only its
    polygons were missing), else all, each allowed to replace a file this very run finished."""
    rasters = [OutputRaster(PROBABILITIES, Path(out), overwrite)]
    if class_map is not None:
        rasters.append(OutputRaster(CLASS_MAP, Path(class_map), overwrite))
    finished = [resume and _finished_by(r.path, identity) for r in rasters]
    if all(finished):
        return []
    rasters = [r.replacing(done) for r, done in zip(rasters, finished)]
    for raster in rasters:
        check_output(raster.path, raster.replace)
    return rasters


def _check_bands(image, info, card: ModelCard, dated: bool) -> None:
    """The image must have the model's band count and, where both name every band, its band
    names in order (a stack in another order); dates of one place differ in their names by
    design, so their names are not compared."""
    _check_band_count(image, info, card)
    trained = list(card["bands"].get("descriptions") or [])
    given = list(info.descriptions)
    if dated or not all(trained) or not all(given) or len(trained) != len(given):
        return
    for band, (mine, theirs) in enumerate(zip(given, trained), start=1):
        if mine != theirs:
            raise RasterError(
                f"{image}: band {band} is {mine!r} where the model was trained on {theirs!r}; "
                f"give its bands in the model's order ({', '.join(trained)})"
            )


def _check_band_count(image, info, card: ModelCard) -> None:
    if info.count != card.band_count:
        raise RasterError(
            f"{image}: {info.count} bands, but the model was trained on {card.band_count}"
        )


def _check_dates(dates, info, card: ModelCard, consensus: str) -> None:
    """Further dates: the first date's grid and the model's band count."""
    if consensus not in CONSENSUS:
        raise ParameterError(f"`consensus` must be one of {', '.join(CONSENSUS)}")
    for date in dates:
        other = open_raster_info(date)
        _check_band_count(date, other, card)
        same = (other.width, other.height, other.transform, other.crs) == (
            info.width, info.height, info.transform, info.crs
        )  # fmt: skip
        if not same:
            raise RasterError(
                f"{date}: not on the first date's grid ({info.width} x {info.height}); put it "
                "on that grid first: geoseg stack THIS.tif `like` FIRST.tif -o this.vrt"
            )


def _versions(paths) -> list:
    """Each file's path, size and modification time (what a resumed run must find again);
    the path alone for a URL."""
    return [
        [absolute(p)] if is_gdal_path(p) else [absolute(p), *file_version(Path(p))] for p in paths
    ]


def _check_options(chip: int, overlap: int, block_size: int, batch_size: int) -> None:
    if not 0 <= overlap < chip:
        raise ParameterError(f"`overlap` must be in [0, {chip}) for {chip} px chips, not {overlap}")
    if block_size < chip or block_size % chip:
        raise ParameterError(f"`block_size` must be a multiple of the chip size {chip}")
    if batch_size < 1:
        raise ParameterError(f"`batch_size` must be at least 1, not {batch_size}")


def _thresholds(card: ModelCard, threshold: float | None) -> dict[str, float]:
    """The per-class thresholds recorded with the probabilities (none for a multiclass model)."""
    if card.task != "multiclass":
        return resolve_thresholds(card.classes, card.thresholds, threshold)
    if threshold is not None:
        raise ParameterError(
            "`threshold` does not apply to a multiclass model: each pixel takes its likeliest class"
        )
    return {}


def _check_class_map(card: ModelCard, model, class_map) -> None:
    """A class map needs mutually exclusive classes (a softmax), each with a uint8 code."""
    if class_map is None:
        return
    if card.task != "multiclass":
        raise ParameterError(
            f"`class_map` needs a multiclass model; {model} is {card.task} (its classes may "
            "overlap): threshold its probabilities instead, e.g. with `vectors`"
        )
    if len(card.classes) > CLASS_MAP_NODATA:
        raise ParameterError(
            f"`class_map` holds at most {CLASS_MAP_NODATA} classes (uint8 codes, "
            f"{CLASS_MAP_NODATA} = nodata); {model} has {len(card.classes)}"
        )


def _check_outputs(images, model, out, vectors, class_map, polygons, block_size, card):
    """Outputs must differ from the inputs and each other; polygon options must fit the model."""
    check_apart([out, class_map, vectors], [*images, model])
    if vectors is None:
        return
    from geoseg.delineation.vectorizing import (
        check_parcels_class,
        check_vector_options,
        check_vector_path,
    )

    check_vector_path(vectors)
    check_vector_options(polygons, block_size)
    if card.task == "multiclass" and polygons.mode == "parcels":
        raise ParameterError(
            "`mode` parcels needs a field extent or a boundary band, which a multiclass model "
            "has not: its polygons are the regions of each class (`mode` regions)"
        )
    check_parcels_class(polygons.mode, card.classes, model, card.roles)


def run_identity(image, model, **options) -> dict:
    """What decides a prediction's pixels: the image and model files (as found), the options."""
    model = Path(model).absolute()
    return {
        "image": absolute(image),
        "image_file": None if is_gdal_path(image) else list(file_version(Path(image))),
        "model": str(model),
        "model_file": list(file_version(model / MODEL_NAME)),
        "model_card": hashlib.sha256((model / CARD_NAME).read_bytes()).hexdigest(),
        **options,
    }


def _run_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _finished_by(out, identity: dict) -> bool:
    """Whether ``out`` is the finished COG of this very run (only its polygons were missing)."""
    if not Path(out).is_file():
        return False
    try:
        with rasterio.open(out) as src:
            return src.tags().get("geoseg_run") == _run_key(identity)
    except rasterio.errors.RasterioError:
        return False


PROBABILITIES, CLASS_MAP = "probabilities", "class map"


@dataclass(frozen=True)
class OutputRaster:
    """A raster ``predict`` writes: the probabilities or the class map."""

    kind: str  # PROBABILITIES or CLASS_MAP
    path: Path
    replace: bool  # it may replace a file already there

    def replacing(self, finished_by_this_run: bool) -> OutputRaster:
        """This raster, also allowed to replace a file that this very run had finished."""
        return OutputRaster(self.kind, self.path, self.replace or finished_by_this_run)

    def profile(self, info, classes: list[str]) -> dict:
        """The GeoTIFF profile: a band per class, or one band of class codes with nodata."""
        grid = dict(width=info.width, height=info.height, crs=info.crs, transform=info.transform)
        if self.kind == CLASS_MAP:
            return dict(**grid, count=1, dtype="uint8", nodata=CLASS_MAP_NODATA)
        return dict(**grid, count=len(classes), dtype="uint8")

    def stage(self, info, classes, identity, resume: bool) -> StagedCog:
        options = CLASS_MAP_COG_OPTIONS if self.kind == CLASS_MAP else None
        return StagedCog(self.path, self.profile(info, classes), identity,
                         overwrite=self.replace, resume=resume, cog_options=options)  # fmt: skip


def _describe_raster(staged: StagedCog, kind: str, card: ModelCard, tags: dict) -> None:
    """Band descriptions, colour table and geoseg tags of a raster being written."""
    dataset = staged.dataset
    if kind == CLASS_MAP:
        dataset.set_band_description(1, "class")
        dataset.write_colormap(1, class_colormap(len(card.classes), CLASS_MAP_NODATA))
    else:
        for band, name in enumerate(card.classes, start=1):
            dataset.set_band_description(band, name)
    dataset.update_tags(**tags)


def tuned_delineation(card: ModelCard, tta: bool) -> dict[str, float]:
    """The card's delineation thresholds tuned for plain or TTA prediction (one set in cards
    written before TTA was tuned apart)."""
    record = card.get("delineation", {})
    return dict((record.get("tta", record) if tta else record).get("thresholds", {}))


def _raster_tags(kind: str, card: ModelCard, model, thresholds, identity) -> dict[str, str]:
    model = str(Path(model).absolute())
    if kind == CLASS_MAP:
        tags = ClassMapTags(tuple(card.classes), model).to_tags()
    else:
        tags = PredictionTags(
            tuple(card.classes),
            thresholds,
            model,
            targets=card.targets,
            delineation=tuned_delineation(card, identity.get("tta", False)),
            task=card.task,
        ).to_tags()
    return {**tags, "geoseg_run": _run_key(identity)}


def _predict_raster(
    run: RasterRun, rasters, workers, scheduler, resume: bool, progress
) -> PredictSummary:
    """Predict ``run``'s rasters block by block with Dask; every block written is journalled,
    and ``resume`` skips those that every raster has."""
    info, card = run.info, run.card
    local = forward_pass(run.forward)  # loads the model here: a broken one fails before any work
    job = BlockJob(
        image=absolute(run.image),
        width=info.width,
        height=info.height,
        grid=run.grid,
        classes=len(card.classes),
        normalization=card["normalization"],
        forward=run.forward,
        class_map=any(r.kind == CLASS_MAP for r in rasters),
        dates=tuple(absolute(d) for d in run.dates),
        consensus=run.consensus,
    )
    windows = block_windows(info.width, info.height, run.block_size)
    started = time.perf_counter()
    with ExitStack() as stack:  # on success the class map is published first, then the rest
        staged = {}
        for raster in rasters:
            staged[raster.kind] = stack.enter_context(
                raster.stage(info, card.classes, run.identity, resume)
            )
            tags = _raster_tags(raster.kind, card, run.model, run.thresholds, run.identity)
            _describe_raster(staged[raster.kind], raster.kind, card, tags)
        # a block is done when every raster has it (a crash may come between their writes)
        todo = [i for i in range(len(windows)) if not all(i in s.done for s in staged.values())]
        logger.info(
            "%d blocks of %d px (%d to do), %s on %s",
            len(windows), run.block_size, len(todo), local.precision,
            "GPU" if local.gpu else "CPU",
        )  # fmt: skip
        tasks = [delayed(predict_block)(job, windows[i], i) for i in todo]

        def write(result: BlockResult) -> int:
            mask = np.where(result.valid, 255, 0).astype(np.uint8)
            staged[PROBABILITIES].write_block(result.index, result.probabilities, mask,
                                              result.window)  # fmt: skip
            if CLASS_MAP in staged:
                staged[CLASS_MAP].write_block(result.index, result.codes[None], None,
                                              result.window)  # fmt: skip
            logger.debug("block %d: %d chips", result.index, result.chips)
            return result.chips

        chips = compute_each(tasks, write, workers=workers, scheduler=scheduler, progress=progress)
    summary = PredictSummary(
        out=rasters[0].path,
        width=info.width,
        height=info.height,
        blocks=len(windows),
        chips=sum(chips),
        seconds=time.perf_counter() - started,
        device="GPU" if local.gpu else "CPU",
        precision=local.precision,
        resumed_blocks=len(windows) - len(todo),
        class_map=next((r.path for r in rasters if r.kind == CLASS_MAP), None),
    )
    logger.info("predicted %d chips in %.1f s", summary.chips, summary.seconds)
    return summary
