"""Predict class probabilities over a raster of any size.

The raster is cut into blocks, one Dask task each. A task reads its block with a halo, runs every
chip of a raster-wide grid of overlapping chips that touches the block, and blends their outputs
with a smooth window (highest at the chip centre). Chip positions depend on the raster only, so
the result does not depend on the block size. Blocks go to one writer as they complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from dask import delayed
from rasterio.windows import Window

from geoseg.cog import StagedCog
from geoseg.contracts import CARD_NAME, MODEL_NAME, PredictionTags, read_model_card
from geoseg.errors import ParameterError, RasterError
from geoseg.forward import ForwardSpec, forward_pass
from geoseg.outputs import check_output
from geoseg.parallel import Progress, check_scheduler, compute_each
from geoseg.raster import block_windows, normalize, open_raster_info, read_padded
from geoseg.scoring import quantize, resolve_thresholds

logger = logging.getLogger(__name__)

WEIGHT_FLOOR = 1e-3
"""Smallest blending weight, so that pixels seen only by chip edges still get a value."""


@dataclass(frozen=True)
class ChipGrid:
    """Chips of ``size`` every ``size - overlap`` pixels, starting half an overlap before 0."""

    size: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def origins(self, length: int) -> np.ndarray:
        """Chip origins along an axis of ``length`` pixels, covering all of it."""
        start = -(self.overlap // 2)
        count = max(1, math.ceil((length - start - self.size) / self.stride) + 1)
        return start + self.stride * np.arange(count)

    def touching(self, length: int, begin: int, end: int) -> np.ndarray:
        """Origins of the chips that overlap pixels ``begin .. end - 1``."""
        origins = self.origins(length)
        return origins[(origins < end) & (origins + self.size > begin)]


def blend_window(size: int) -> np.ndarray:
    """A (size, size) float32 weight: squared sine in each direction, floored above zero."""
    ramp = np.maximum(np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2, WEIGHT_FLOOR)
    return np.outer(ramp, ramp).astype(np.float32)


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


@dataclass
class BlockResult:
    index: int
    window: Window
    probabilities: np.ndarray  # (classes, h, w) uint8, 0 where invalid
    valid: np.ndarray  # (h, w) bool
    chips: int


def predict_block(job: BlockJob, window: Window, index: int = 0) -> BlockResult:
    """Blended probabilities of the chips touching ``window``."""
    size = job.grid.size
    top, left = int(window.row_off), int(window.col_off)
    bottom, right = top + int(window.height), left + int(window.width)
    rows = job.grid.touching(job.height, top, bottom)
    cols = job.grid.touching(job.width, left, right)
    r0, c0 = int(rows[0]), int(cols[0])
    read = Window(c0, r0, int(cols[-1]) + size - c0, int(rows[-1]) + size - r0)
    with rasterio.open(job.image) as src:
        data, valid, _ = read_padded(src, read)
    image = normalize(data, valid, job.normalization)
    origins = [
        (int(r), int(c))
        for r in rows
        for c in cols
        if valid[r - r0 : r - r0 + size, c - c0 : c - c0 + size].any()
    ]
    forward = forward_pass(job.forward)
    weight = blend_window(size)
    height, width = bottom - top, right - left
    total = np.zeros((height, width, job.classes), np.float32)
    weights = np.zeros((height, width), np.float32)
    for start in range(0, len(origins), job.forward.batch_size):
        batch = origins[start : start + job.forward.batch_size]
        chips = np.stack([image[r - r0 : r - r0 + size, c - c0 : c - c0 + size] for r, c in batch])
        outputs = forward(chips)
        for (r, c), output in zip(batch, outputs):
            y0, y1 = max(r, top), min(r + size, bottom)
            x0, x1 = max(c, left), min(c + size, right)
            w = weight[y0 - r : y1 - r, x0 - c : x1 - c]
            total[y0 - top : y1 - top, x0 - left : x1 - left] += (
                w[..., None] * output[y0 - r : y1 - r, x0 - c : x1 - c]
            )
            weights[y0 - top : y1 - top, x0 - left : x1 - left] += w
    inside = valid[top - r0 : bottom - r0, left - c0 : right - c0]
    probabilities = np.moveaxis(quantize(total / np.maximum(weights, 1e-12)[..., None]), -1, 0)
    probabilities[:, ~inside] = 0
    return BlockResult(index, window, probabilities, inside, len(origins))


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

    @property
    def chips_per_second(self) -> float:
        return self.chips / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if not self.blocks:  # an interrupted run had finished the raster
            lines = [f"probabilities: {self.out} (complete before the resume)"]
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
        if self.vectors is not None:
            lines.append(self.vectors.describe())
        return "\n".join(lines)


def predict(
    image: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    vectors: str | Path | None = None,
    threshold: float | None = None,
    overlap: int | None = None,
    batch_size: int = 32,
    block_size: int = 2048,
    tta: bool = False,
    mode: str = "regions",
    extent_threshold: float | None = None,
    marker_threshold: float | None = None,
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

    Writes a Cloud-Optimised GeoTIFF of uint8 probabilities (0..255, one band per class, named
    after it; nodata where the image is nodata) and, with ``vectors``, polygons (see
    :func:`geoseg.vectorize`). ``overlap`` defaults to a quarter of the model's chip size
    (64 px for 256 px chips). An interrupted run keeps the blocks it wrote: ``resume``
    continues it (with the same inputs and options) and gives the same COG as an
    uninterrupted run. Returns a :class:`PredictSummary`.
    """
    card = read_model_card(model)
    info = open_raster_info(image)
    classes, chip = card.classes, card.chip_size
    if info.count != card.band_count:
        raise RasterError(
            f"{image}: {info.count} bands, but the model was trained on {card.band_count}"
        )
    if overlap is None:
        overlap = chip // 4
    _check_options(chip, overlap, block_size, batch_size)
    thresholds = resolve_thresholds(classes, card.thresholds, threshold)
    _check_outputs(image, model, out, vectors, mode, min_area, simplify, block_size, card)
    identity = run_identity(
        image, model, overlap=overlap, block_size=block_size, batch_size=batch_size, tta=tta,
        device=device, mixed_precision=mixed_precision, threshold=threshold,
    )  # fmt: skip
    finished = resume and _finished_by(out, identity)
    if not finished:
        check_output(out, overwrite)
    if vectors is not None:
        check_output(vectors, overwrite or resume)
    check_scheduler(scheduler)  # before the model loads (seconds)
    if finished:
        logger.info("%s is complete from the interrupted run: polygons only", out)
        summary = PredictSummary(Path(out), info.width, info.height, 0, 0, 0.0, "-", "-")
    else:
        summary = _predict_raster(
            image, model, out, card, info, thresholds, identity,
            ChipGrid(chip, overlap), block_size, batch_size, tta, device, mixed_precision,
            workers, scheduler, resume, overwrite, progress,
        )  # fmt: skip
    if vectors is not None:
        from geoseg.vectorizing import vectorize

        summary.vectors = vectorize(
            out,
            vectors,
            threshold=threshold,
            mode=mode,
            extent_threshold=extent_threshold,
            marker_threshold=marker_threshold,
            min_area=min_area,
            simplify=simplify,
            block_size=block_size,
            workers=workers,
            scheduler=scheduler,
            overwrite=overwrite or resume,
            progress=progress,
        )
    return summary


def _check_options(chip: int, overlap: int, block_size: int, batch_size: int) -> None:
    if not 0 <= overlap < chip:
        raise ParameterError(f"--overlap must be in [0, {chip}) for {chip} px chips, not {overlap}")
    if block_size < chip or block_size % chip:
        raise ParameterError(f"--block-size must be a multiple of the chip size {chip}")
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be at least 1, not {batch_size}")


def _check_outputs(image, model, out, vectors, mode, min_area, simplify, block_size, card):
    """Outputs must differ from the inputs and each other; polygon options must fit the model."""
    inputs = {Path(image).resolve(): "the input image", Path(model).resolve(): "the model"}
    for option, path in (("--out", out), ("--vectors", vectors)):
        if path is not None and Path(path).resolve() in inputs:
            raise ParameterError(f"{option} {path} is {inputs[Path(path).resolve()]}")
    if vectors is None:
        return
    from geoseg.vectorizing import check_parcels_class, check_vector_options, check_vector_path

    check_vector_path(vectors)
    check_vector_options(mode, min_area, simplify, block_size)
    check_parcels_class(mode, card.classes, model, card.roles)
    if Path(vectors).resolve() == Path(out).resolve():
        raise ParameterError("--vectors must differ from --out")


def run_identity(image, model, **options) -> dict:
    """What decides a prediction's pixels: the image and model files (as found), the options."""

    def version(path: Path) -> list:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    model = Path(model).absolute()
    return {
        "image": str(Path(image).absolute()),
        "image_file": version(Path(image)),
        "model": str(model),
        "model_file": version(model / MODEL_NAME),
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


def _predict_raster(
    image, model, out, card, info, thresholds, identity, grid, block_size, batch_size, tta,
    device, mixed_precision, workers, scheduler, resume, overwrite, progress,
) -> PredictSummary:  # fmt: skip
    classes = card.classes
    spec = ForwardSpec.from_card(
        model, card, batch_size=batch_size, tta=tta, device=device, precision=mixed_precision
    )
    local = forward_pass(spec)  # loads the model here: a broken one fails before any work
    job = BlockJob(
        image=str(Path(image).absolute()),
        width=info.width,
        height=info.height,
        grid=grid,
        classes=len(classes),
        normalization=card["normalization"],
        forward=spec,
    )
    windows = block_windows(info.width, info.height, block_size)
    profile = dict(
        width=info.width,
        height=info.height,
        count=len(classes),
        dtype="uint8",
        crs=info.crs,
        transform=info.transform,
    )
    tags = PredictionTags(
        tuple(classes),
        thresholds,
        str(Path(model).absolute()),
        targets=card.targets,
        delineation=dict(card.get("delineation", {}).get("thresholds", {})),
    ).to_tags()
    started = time.perf_counter()
    with StagedCog(out, profile, identity, overwrite=overwrite, resume=resume) as staged:
        todo = [i for i in range(len(windows)) if i not in staged.done]
        logger.info(
            "%d blocks of %d px (%d to do), %s on %s",
            len(windows), block_size, len(todo), local.precision, "GPU" if local.gpu else "CPU",
        )  # fmt: skip
        for band, name in enumerate(classes, start=1):
            staged.dataset.set_band_description(band, name)
        staged.dataset.update_tags(**tags, geoseg_run=_run_key(identity))
        tasks = [delayed(predict_block)(job, windows[i], i) for i in todo]

        def write(result: BlockResult) -> int:
            mask = np.where(result.valid, 255, 0).astype(np.uint8)
            staged.write_block(result.index, result.probabilities, mask, result.window)
            logger.debug("block %d: %d chips", result.index, result.chips)
            return result.chips

        chips = compute_each(tasks, write, workers=workers, scheduler=scheduler, progress=progress)
    summary = PredictSummary(
        out=Path(out),
        width=info.width,
        height=info.height,
        blocks=len(windows),
        chips=sum(chips),
        seconds=time.perf_counter() - started,
        device="GPU" if local.gpu else "CPU",
        precision=local.precision,
        resumed_blocks=len(windows) - len(todo),
    )
    logger.info("predicted %d chips in %.1f s", summary.chips, summary.seconds)
    return summary
