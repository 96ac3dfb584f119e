"""Polygons from a probability raster: per block in parallel, merged across block borders.

Each block is labelled with a small halo (:mod:`geoseg.delineation.regions`) and polygonised in
pixel coordinates, where block edges meet exactly. Polygons that do not reach an inner block edge
are final and go straight to the output file. The others are kept with the labels on both sides of
each block edge; two pieces across an edge are one region when a pair of neighbouring pixels has the
same label in either block's window. Those pieces are united as soon as the blocks around them are
in (:mod:`geoseg.delineation.border_merge`), so only polygons on the borders of blocks still to come
are held in memory.

A class map (``geoseg predict --class-map``) or a multiclass probability raster (its likeliest
band) gives the regions of each class code but background, through the same blocks and merge.

Polygons go to a GeoPackage, a FlatGeobuf or a GeoParquet file, as the output's suffix names.
"""

from __future__ import annotations

import logging
import os
import time
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from dask import delayed
from rasterio.windows import Window

from geoseg.contracts import (
    CLASS_COLUMN,
    CLOSING,
    CLOSING_NOTE,
    DEFAULT_THRESHOLD,
    WATERSHED,
    ClassMapTags,
    Delineation,
    PolygonMetadata,
    PredictionTags,
    describe_delineation,
    is_class_map,
)
from geoseg.delineation.border_merge import POLYGON, BorderMerge, Pieces
from geoseg.delineation.polygon_settings import PolygonSettings
from geoseg.delineation.regions import (
    DELINEATION_HALO,
    PARCELS_HALO,
    border_evidence,
    confident,
    delineation_levels,
    extent_parcel_labels,
    join_level,
    parcel_labels,
    quantized_level,
    region_labels,
)
from geoseg.errors import OutputWriteError, ParameterError, RasterError
from geoseg.io.outputs import check_output, hidden_sibling, output_lock, publish, write_failure
from geoseg.io.raster import GDAL_CACHE_BYTES, block_windows, open_raster_info, read_padded
from geoseg.metrics.scores import resolve_thresholds
from geoseg.parallel import Progress, compute_each

logger = logging.getLogger(__name__)

SIDES = ("top", "bottom", "left", "right")
VECTOR_FORMATS = {".gpkg": "GeoPackage", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet"}
"""Polygon file suffixes (any case) and the format each names."""
PROCESS_PIXELS = 4096 * 4096
"""Rasters of at least this many pixels are vectorised in local processes rather than threads:
starting them costs about a second, and polygonising in threads gains little."""
BANDS, CODES, ARGMAX = "bands", "codes", "argmax"
"""Where a pixel's classes come from: each band above its threshold (overlapping classes), the
class codes of a class map, or the likeliest band of multiclass probabilities."""


@dataclass(frozen=True)
class ClassSource:
    """A raster of mutually exclusive classes: a class map or multiclass probabilities."""

    classes: tuple[str, ...]  # code 0 (background) .. N
    kind: str  # CODES or ARGMAX

    @property
    def bands(self) -> tuple[int, ...]:
        """The 1-based bands to read: the codes, or every class's probability."""
        return (1,) if self.kind == CODES else tuple(range(1, len(self.classes) + 1))

    def codes(self, data: np.ndarray) -> np.ndarray:
        """Class codes (h, w) of the bands read (``bands``, h, w); ties go to the first class."""
        return data[0] if self.kind == CODES else np.argmax(data, axis=0)


def class_source(raster: str | os.PathLike) -> ClassSource | None:
    """The classes of a class map or of multiclass probabilities; None for other predictions
    (refused, as :class:`PredictionTags` does, when ``raster`` is no prediction at all)."""
    if is_class_map(raster):
        return ClassSource(ClassMapTags.read(raster).classes, CODES)
    tags = PredictionTags.read(str(raster))
    return ClassSource(tags.classes, ARGMAX) if tags.task == "multiclass" else None


@dataclass(frozen=True)
class VectorJob:
    """What a block task needs; small and picklable."""

    raster: str
    width: int
    height: int
    bands: tuple[int, ...]  # 1-based raster bands, one per output class
    levels: tuple[int, ...]  # a pixel is positive where its value >= level
    mode: str
    transform: Affine
    min_area: float = 0.0
    simplify: float = 0.0  # tolerance in CRS units
    pixel_size: float = 1.0
    defer_simplify: bool = field(default=False)
    roles: tuple[str, ...] = ()
    """Parcels from the extent: the role of each band read (extent first); ``levels`` are then
    the extent, boundary, marker and merge levels."""
    classes_from: str = BANDS
    codes: tuple[int, ...] = ()
    """With classes from CODES or ARGMAX: the class codes made polygons (not background)."""
    min_mean: float = 0.0
    """Parcels from the extent whose mean extent probability (0..1) is below this are dropped."""
    join: int = 0
    """Parcels from the extent and boundary whose border's mean boundary level (0..255) is below
    this are one (0: none): every parcel waits until the borders of its group are all known."""

    @property
    def halo(self) -> int:
        if self.mode != "parcels":
            return 1
        return DELINEATION_HALO if self.roles else PARCELS_HALO

    @property
    def outputs(self) -> int:
        """Classes of polygons made: one per band or class code, one (parcels) from the extent."""
        if self.classes_from != BANDS:
            return len(self.codes)
        return 1 if self.roles else len(self.levels)


@dataclass
class BlockPolygons:
    """One block's output: finished polygons and the pieces that wait for their neighbours."""

    index: tuple[int, int]
    final: Pieces | Rows  # Rows unless the job defers simplifying
    border: Pieces
    edges: dict  # (class, side) -> (labels inside the block edge, labels just outside it,
    #                                   and with a join the boundary levels along the edge)
    pairs: tuple = ()
    """With a join: the borders between the block's parcels (first and second label, pixel
    pairs, summed boundary level; :func:`geoseg.delineation.regions.border_evidence`)."""


def ragged_polygons(shapes) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Coordinates, offsets (rings, polygons) and values of ``(mapping, value)`` pairs of
    GeoJSON-like polygons, consumed as they come: each mapping is freed before the next is
    made, which keeps them in the processor's cache (twice as fast as a list of them)."""
    coords, ring_sizes, rings_per_polygon, values = array("d"), array("q"), array("q"), []
    flat = chain.from_iterable
    for polygon, value in shapes:
        rings = polygon["coordinates"]
        rings_per_polygon.append(len(rings))
        ring_sizes.extend(map(len, rings))
        coords.extend(flat(flat(rings)))
        values.append(value)
    offsets = (
        np.concatenate([[0], np.cumsum(np.frombuffer(ring_sizes, np.int64))]),
        np.concatenate([[0], np.cumsum(np.frombuffer(rings_per_polygon, np.int64))]),
    )
    return np.frombuffer(coords, np.float64).reshape(-1, 2), offsets, np.array(values)


def to_crs(xy: np.ndarray, t: Affine) -> np.ndarray:
    """Pixel coordinates (n, 2) in CRS units."""
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])


def polygonize(
    labels: np.ndarray,
    score: np.ndarray,
    class_index: int,
    offset,
    touching: np.ndarray,
    transform: Affine | None = None,
) -> tuple[Pieces, Pieces]:
    """One polygon per label of ``labels`` (pixel coordinates shifted by ``offset``): the final
    ones, in CRS units when ``transform`` is given, and those with a label in ``touching``."""
    labels = np.ascontiguousarray(labels)  # GDAL gets a copy of it anyway
    shapes = rasterio.features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.translation(*offset)
    )
    coords, offsets, values = ragged_polygons(shapes)
    if not len(values):
        return Pieces.concat([]), Pieces.concat([])
    values = values.astype(np.int64)
    on_border = np.isin(values, touching)
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=int(values.max()) + 1)
    sums = np.bincount(flat, weights=score.ravel(), minlength=len(pixels))
    final_coords, final_offsets = ragged_subset(coords, offsets, ~on_border)
    if transform is not None:
        final_coords = to_crs(final_coords, transform)
    final_geoms = shapely.from_ragged_array(POLYGON, final_coords, final_offsets)
    border_geoms = shapely.from_ragged_array(POLYGON, *ragged_subset(coords, offsets, on_border))
    final = joined_pieces(final_geoms, values[~on_border], class_index, pixels, sums)
    border = joined_pieces(border_geoms, values[on_border], class_index, pixels, sums)
    return final, border


def ragged_subset(coords: np.ndarray, offsets: tuple, keep: np.ndarray) -> tuple:
    """Coordinates and offsets of the polygons ``keep`` picks from ragged polygons."""
    ring_offsets, polygon_offsets = offsets
    rings = np.repeat(keep, np.diff(polygon_offsets))
    ring_sizes = np.diff(ring_offsets)
    kept = coords[np.repeat(rings, ring_sizes)]
    return kept, (
        np.concatenate([[0], np.cumsum(ring_sizes[rings])]),
        np.concatenate([[0], np.cumsum(np.diff(polygon_offsets)[keep])]),
    )


def joined_pieces(geoms, values, class_index: int, pixels, sums) -> Pieces:
    """One geometry per label: the parts of a label split inside the block (joined in its
    halo, or a parcel in several parts) as a multi-polygon (they share no edge: polygonising
    joins what does); ``pixels`` and ``sums`` are indexed by label."""
    ids, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    joined = np.empty(len(ids), dtype=object)
    alone = counts[inverse] == 1
    joined[inverse[alone]] = geoms[alone]
    if not alone.all():
        order = np.argsort(inverse[~alone], kind="stable")
        parts, owner = geoms[~alone][order], inverse[~alone][order]
        shapely.multipolygons(parts, indices=owner, out=joined)
    return Pieces(np.full(len(ids), class_index), ids, joined, pixels[ids], sums[ids])


def vectorize_block(job: VectorJob, index: tuple[int, int], window: Window) -> BlockPolygons:
    """Label and polygonise one block; split its polygons into final ones and border pieces.

    The final ones come encoded for the writer (:class:`Rows`), unless ``job.defer_simplify``.
    """
    halo = job.halo
    top, left = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    read = Window(left - halo, top - halo, width + 2 * halo, height + 2 * halo)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(job.raster) as src:
        data, valid, _ = read_padded(src, read, list(job.bands))
    core = (slice(halo, halo + height), slice(halo, halo + width))
    inner_sides = [
        side
        for side, inner in zip(
            SIDES, (top > 0, top + height < job.height, left > 0, left + width < job.width)
        )
        if inner
    ]
    direct = not job.defer_simplify and job.simplify == 0  # finals straight into CRS units
    finals, borders, edges, pairs = [], [], {}, ()
    for k, (labels, score) in enumerate(block_labels(job, data, valid)):
        for side in inner_sides:
            edges[k, side] = edge_lines(labels, halo, height, width, side)
        touching = np.concatenate([edges[k, s][0] for s in inner_sides] + [np.zeros(0, int)])
        if job.join:  # every parcel waits until the borders of all its neighbours are known
            boundary = data[job.roles.index("boundary")]
            for side in inner_sides:
                edges[k, side] += edge_lines(boundary, halo, height, width, side)[:1]
            touching = np.unique(labels[core])
            pairs = border_evidence(labels[core], boundary[core])
        final, border = polygonize(
            labels[core], score[core], k, (left, top), touching, job.transform if direct else None
        )
        finals.append(final)
        borders.append(border)
    final = Pieces.concat(finals)
    if not job.defer_simplify:
        final = encode(finish_in_crs(final, job) if direct else finish(final, job))
    return BlockPolygons(index, final, Pieces.concat(borders), edges, pairs)


def block_labels(job: VectorJob, data: np.ndarray, valid: np.ndarray):
    """Label image and per-pixel score (0..255) of each output class of a window."""
    if job.classes_from != BANDS:
        return class_code_labels(job, data, valid)
    if job.roles:
        bands = dict(zip(job.roles, data))
        labels = extent_parcel_labels(
            bands["extent"], bands.get("boundary"), bands.get("distance"), valid, job.levels
        )
        return [(labels, bands["extent"].astype(np.float64))]
    if job.mode == "parcels":
        return [(parcel_labels(data[0] >= job.levels[0], valid), 255.0 - data[0])]
    return [
        (region_labels((data[k] >= level) & valid), data[k].astype(np.float64))
        for k, level in enumerate(job.levels)
    ]


def class_code_labels(job: VectorJob, data: np.ndarray, valid: np.ndarray):
    """Label image and score of each class code of a window of a class map (score: NaN, it has
    no probabilities) or of multiclass probabilities (score: the likeliest band's)."""
    if job.classes_from == ARGMAX:
        codes, score = np.argmax(data, axis=0), data.max(axis=0).astype(np.float64)
    else:
        codes, score = data[0], np.full(data.shape[1:], np.nan)
    return [(region_labels((codes == code) & valid), score) for code in job.codes]


def edge_lines(labels: np.ndarray, halo: int, height: int, width: int, side: str):
    """Labels (or values) of the block's pixel line along ``side`` and of the halo line just
    beyond it.

    Copies: they are kept until the neighbour arrives, and a view would keep the whole label image.
    """
    rows, cols = slice(halo, halo + height), slice(halo, halo + width)
    if side == "top":
        lines = labels[halo, cols], labels[halo - 1, cols]
    elif side == "bottom":
        lines = labels[halo + height - 1, cols], labels[halo + height, cols]
    elif side == "left":
        lines = labels[rows, halo], labels[rows, halo - 1]
    else:
        lines = labels[rows, halo + width - 1], labels[rows, halo + width]
    return tuple(line.copy() for line in lines)


def split_multipart_pieces(pieces: Pieces) -> Pieces:
    """Split multi-part polygons (rare, parcels only); parts share pixels and score by area."""
    if (shapely.get_type_id(pieces.geometry) == shapely.GeometryType.POLYGON).all():
        return pieces
    parts, parent = shapely.get_parts(pieces.geometry, return_index=True)
    share = shapely.area(parts) / np.maximum(shapely.area(pieces.geometry)[parent], 1e-300)
    return Pieces(
        pieces.classes[parent],
        pieces.labels[parent],
        parts,
        np.rint(pieces.pixels[parent] * share).astype(np.int64),
        pieces.score[parent] * share,
    )


def finish(pieces: Pieces, job: VectorJob) -> Pieces:
    """Simplify (in pixel units, per class as a coverage), move to CRS units, drop small ones."""
    if not len(pieces):
        return pieces
    geometry = pieces.geometry
    if job.simplify > 0:
        geometry = geometry.copy()
        tolerance = job.simplify / job.pixel_size
        for k in np.unique(pieces.classes):
            chosen = pieces.classes == k
            # vertices at every pixel corner, so that neighbours share theirs (a valid coverage)
            dense = shapely.segmentize(geometry[chosen], 1.0)
            geometry[chosen] = shapely.coverage_simplify(dense, tolerance)
    geometry = shapely.transform(geometry, lambda xy: to_crs(xy, job.transform))
    moved = Pieces(pieces.classes, pieces.labels, geometry, pieces.pixels, pieces.score)
    return finish_in_crs(moved, job)


def _filters_said(job: VectorJob) -> str:
    """The filters that may have removed every polygon, as the end of a sentence."""
    said = []
    if job.min_area > 0:
        said.append(f"smaller than {job.min_area:g} square CRS units")
    if job.min_mean > 0:
        said.append(f"of mean extent probability under {job.min_mean:g}")
    return f": none is left after dropping those {' and those '.join(said)}" if said else ""


def finish_in_crs(pieces: Pieces, job: VectorJob) -> Pieces:
    """Single polygons in CRS units without the small ones (and, from the extent, without the
    parcels of low mean extent probability)."""
    if job.min_mean > 0:  # per parcel: its parts share its mean
        pieces = pieces.select(confident(pieces.score, pieces.pixels, job.min_mean))
    finished = split_multipart_pieces(pieces)
    if job.min_area > 0:  # per part: split_multipart_pieces may have split a polygon
        finished = finished.select(shapely.area(finished.geometry) >= job.min_area)
    return finished


@dataclass
class Rows:
    """Finished polygons as the writer takes them: WKB with its measures (in CRS units), made
    where the polygons are (a worker process), so the single writer only writes."""

    classes: np.ndarray
    pixels: np.ndarray
    score: np.ndarray
    area: np.ndarray
    length: np.ndarray
    wkb: np.ndarray

    def __len__(self) -> int:
        return len(self.wkb)


def encode(pieces: Pieces) -> Rows:
    """Rows of single polygons in CRS units."""
    geometry = pieces.geometry
    return Rows(
        pieces.classes,
        pieces.pixels,
        pieces.score,
        shapely.area(geometry),
        shapely.length(geometry),
        shapely.to_wkb(geometry),
    )


class PolygonWriter:
    """One layer of polygons with class, area, pixels and mean_probability.

    A GeoPackage, FlatGeobuf or GeoParquet file, as the suffix of ``path`` names. The layer of
    ``parcels`` follows fiboa's core (as Fields of The World writes it): a unique string ``id``,
    ``area`` in hectares, ``perimeter`` in metres (see
    :func:`geoseg.io.vector_files.hectares_and_metres`), ``determination_method`` "auto-imagery" and
    ``determination_datetime`` (UTC, when the layer was opened), then geoseg's own columns.
    """

    COLUMNS = {
        CLASS_COLUMN: "string",
        "area": "float64",
        "pixels": "int64",
        "mean_probability": "float64",
    }
    PARCEL_COLUMNS = {
        "id": "string",
        "area": "float64",
        "perimeter": "float64",
        "determination_method": "string",
        "determination_datetime": "timestamp",
        CLASS_COLUMN: "string",
        "pixels": "int64",
        "mean_probability": "float64",
    }

    def __init__(self, path: Path, layer: str, crs, class_names: list[str], metadata: dict):
        from geoseg.io.vector_files import open_layer  # Arrow only where polygons are written

        self.class_names = np.array(class_names, dtype=object)
        self.count = 0
        self.per_class = dict.fromkeys(class_names, 0)
        self.crs = crs
        self.fiboa = layer == "parcels"  # the layer is named after the mode
        self.written_at = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ms")
        columns = self.PARCEL_COLUMNS if self.fiboa else self.COLUMNS
        self.layer = open_layer(path, layer, crs, columns, metadata, fiboa=self.fiboa)

    def write(self, pieces: Pieces) -> None:
        """Append ``pieces`` (single polygons in CRS units)."""
        self.write_rows(encode(pieces))

    def write_rows(self, rows: Rows) -> None:
        """Append polygons encoded by :func:`encode`."""
        columns = {
            CLASS_COLUMN: self.class_names[rows.classes],
            "pixels": rows.pixels,
            "mean_probability": rows.score / np.maximum(rows.pixels, 1) / 255,
        }
        if self.fiboa:
            columns.update(self._fiboa_columns(rows))
        else:
            columns["area"] = rows.area
        self.layer.write_wkb(rows.wkb, **columns)
        self.count += len(rows)
        counts = np.bincount(rows.classes, minlength=len(self.class_names))
        for name, n in zip(self.class_names, counts):
            self.per_class[name] += int(n)

    def _fiboa_columns(self, rows: Rows) -> dict[str, np.ndarray]:
        """fiboa's core properties of the next ``len(rows)`` parcels."""
        from geoseg.io.vector_files import measured_hectares_and_metres

        hectares, metres = measured_hectares_and_metres(rows.area, rows.length, rows.wkb, self.crs)
        n = len(rows)
        return {
            "id": np.arange(self.count + 1, self.count + n + 1).astype(str),
            "area": hectares,
            "perimeter": metres,
            "determination_method": np.full(n, "auto-imagery", dtype=object),
            "determination_datetime": np.full(n, self.written_at),
        }

    def __enter__(self) -> PolygonWriter:
        self.layer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.layer.__exit__(*exc)


@dataclass
class VectorizeSummary:
    """What ``vectorize`` wrote."""

    out: Path
    mode: str
    polygons: int
    per_class: dict
    blocks: int
    seconds: float
    delineation: str = ""
    """How parcels were delineated (``watershed`` or ``closing``); empty for regions."""

    def describe(self) -> str:
        detail = ", ".join(f"{name} {n:,}" for name, n in self.per_class.items())
        line = (
            f"polygons: {self.out} ({self.polygons:,} {self.mode}: {detail}; "
            f"{self.blocks} blocks in {self.seconds:.1f} s)"
        )
        if self.delineation == CLOSING:
            line += f"\nwarning: {CLOSING_NOTE}"
        elif self.delineation:
            line += "; by a watershed of the field extent"
        return line


def _write_polygons(out: Path, job: VectorJob, info, block_size: int, plan, metadata: dict,
                    workers, scheduler, progress) -> PolygonWriter:  # fmt: skip
    """Polygonise every block with Dask, unite the pieces across block borders as blocks arrive
    and stream the polygons into a draft published as ``out`` once it verifies."""
    from geoseg.io.vector_files import verify_layer

    windows = block_windows(info.width, info.height, block_size)
    per_row = -(-info.width // block_size)
    tasks = [delayed(vectorize_block)(job, divmod(i, per_row), w) for i, w in enumerate(windows)]
    draft = hidden_sibling(out, out.suffix)
    merge = BorderMerge(job.outputs, block_size, -(-info.height // block_size), per_row, job.join)
    deferred: list[Pieces] = []

    def consume(block: BlockPolygons) -> None:
        merged = merge.add(block)
        if job.defer_simplify:
            deferred.extend([block.final, merged])
        else:
            writer.write_rows(block.final)
            if len(merged):
                writer.write(finish(merged, job))

    # shapes() holds the GIL, so threads barely overlap: large rasters go to processes
    processes = workers != 1 and len(windows) > 1 and info.width * info.height >= PROCESS_PIXELS
    try:
        with output_lock(out):
            try:  # the writer's own errors (a full disk); publish words its own
                writer = PolygonWriter(draft, job.mode, info.crs.to_wkt(), plan.class_names,
                                       metadata)  # fmt: skip
                with writer:
                    compute_each(tasks, consume, workers=workers, scheduler=scheduler,
                                 progress=progress, processes=processes)  # fmt: skip
                    if deferred:
                        writer.write(finish(Pieces.concat(deferred), job))
            except OutputWriteError as exc:
                raise write_failure(out, exc) from None
            publish(draft, out, lambda path: verify_layer(path, writer.count))
    finally:
        draft.unlink(missing_ok=True)
    return writer


def vectorize(
    raster: str | Path,
    out: str | Path,
    *,
    threshold: float | None = None,
    mode: str = "regions",
    extent_threshold: float | None = None,
    marker_threshold: float | None = None,
    parcel_threshold: float | None = None,
    split: float | None = None,
    join: float | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    block_size: int = 1024,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> VectorizeSummary:
    """Polygons of the regions above threshold in a probability raster, to a vector file.

    ``regions``: one polygon per 4-connected region of each class (holes kept), with its class,
    area in CRS units squared, pixel count and mean probability (regression bands such as
    ``distance`` are skipped). ``parcels``, with a field extent band: markers where the
    distance is at least ``marker_threshold`` and the boundary below its threshold, grown by a
    watershed of the distance (of ``1 - boundary`` without it) into the extent, never beyond;
    mean probability is then the extent's. Without an extent band: the areas enclosed by the
    ``boundary`` class, small boundary gaps closed. Parcels share their edges.
    Thresholds default to the delineation thresholds stored by ``geoseg predict``, else the
    class thresholds (else 0.5); ``threshold`` sets one for every class, ``extent_threshold``
    and ``marker_threshold`` the extent's and the markers'; parcels whose mean extent
    probability is below ``parcel_threshold`` are dropped. ``split`` (a depth) keeps in a
    marker only the pixels that near the highest elevation around them; ``join`` makes one
    parcel of neighbours whose mean boundary along their whole shared border is below it (0:
    off; both default to the tuned levels, else 0). ``min_area`` drops smaller
    polygons; ``simplify`` is a tolerance in CRS units, applied so that neighbours stay gap-free
    and geometries valid. The suffix of ``out`` names the format: ``.gpkg`` GeoPackage,
    ``.fgb`` FlatGeobuf, ``.parquet`` GeoParquet.

    A class map, or multiclass probabilities (each pixel in its likeliest class), gives one
    polygon per 4-connected region of each class but background; mean probability is then the
    likeliest class's (empty for a class map, which holds no probabilities).
    """
    polygons = PolygonSettings(
        mode, threshold, extent_threshold, marker_threshold, parcel_threshold, split, join,
        min_area, simplify,
    )  # fmt: skip
    check_vector_path(out)
    check_vector_options(polygons, block_size)
    info = open_raster_info(raster)
    if info.dtype != "uint8":
        raise RasterError(f"{raster}: expected uint8 probabilities (0..255), as predict writes")
    source = class_source(raster)
    plan = _band_plan(raster, polygons) if source is None else _class_plan(raster, source, polygons)
    out = check_output(out, overwrite).absolute()
    job = VectorJob(
        raster=str(Path(raster).absolute()),
        width=info.width,
        height=info.height,
        mode=mode,
        transform=info.transform,
        min_area=min_area,
        simplify=simplify,
        pixel_size=info.pixel_size,
        defer_simplify=mode == "parcels" and simplify > 0,
        **plan.job_fields(),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = PolygonMetadata(str(raster), info.bounds, plan.delineation or None).to_metadata()
    started = time.perf_counter()
    blocks = len(block_windows(info.width, info.height, block_size))
    logger.info("vectorizing %s (%s): %d blocks of %d px", raster, mode, blocks, block_size)
    writer = _write_polygons(out, job, info, block_size, plan, metadata, workers, scheduler,
                             progress)  # fmt: skip
    logger.info("%s: %d polygons in %.1f s", out, writer.count, time.perf_counter() - started)
    if not writer.count:
        logger.warning("%s holds no polygon%s", out, _filters_said(job))
    return VectorizeSummary(
        out=out,
        mode=mode,
        polygons=writer.count,
        per_class=writer.per_class,
        blocks=blocks,
        seconds=time.perf_counter() - started,
        delineation=plan.delineation,
    )


@dataclass(frozen=True)
class _PolygonPlan:
    """Which bands a run reads and how they become classes of polygons."""

    class_names: list[str]
    bands: tuple[int, ...]
    levels: tuple[int, ...] = ()
    roles: tuple[str, ...] = ()
    classes_from: str = BANDS
    codes: tuple[int, ...] = ()
    min_mean: float = 0.0
    delineation: str = ""
    """``watershed`` or ``closing`` in parcels mode (see ``delineation_method``)."""
    join: int = 0

    def job_fields(self) -> dict:
        names = ("bands", "levels", "roles", "classes_from", "codes", "min_mean", "join")
        return {name: getattr(self, name) for name in names}


def _band_plan(raster, polygons: PolygonSettings) -> _PolygonPlan:
    """Regions of each band above its threshold, or parcels from the delineation bands."""
    mode, threshold = polygons.mode, polygons.threshold
    tags = PredictionTags.read(str(raster))
    names, roles = list(tags.classes), tags.roles
    thresholds = resolve_thresholds(names, tags.thresholds, threshold)
    check_parcels_class(mode, names, raster, roles)
    if mode == "parcels" and "extent" in roles:
        delineated = tuple(r for r in ("extent", "boundary", "distance") if r in roles)
        bands = tuple(names.index(roles[r]) + 1 for r in delineated)
        chosen = delineation_thresholds(tags, polygons)
        levels = delineation_levels(chosen, "boundary" in roles)
        join = join_level(chosen, "boundary" in roles)
        logger.info("%s at %s", describe_delineation(roles), chosen.to_dict())
        return _PolygonPlan(
            ["parcel"], bands, levels, delineated, min_mean=chosen.parcel, delineation=WATERSHED,
            join=join,
        )  # fmt: skip
    if mode == "parcels":
        tuned = tags.delineation.get("boundary") if threshold is None else None
        level = thresholds[roles["boundary"]] if tuned is None else tuned
        logger.info("%s; %s at %s", describe_delineation(roles), roles["boundary"], level)
        band = (names.index(roles["boundary"]) + 1,)
        return _PolygonPlan(["parcel"], band, (quantized_level(level),), delineation=CLOSING)
    class_names = [n for n in names if tags.targets[n]["kind"] == "class"] or names
    bands = tuple(names.index(n) + 1 for n in class_names)
    levels = tuple(quantized_level(thresholds[name]) for name in class_names)
    return _PolygonPlan(class_names, bands, levels)


def _class_plan(raster, source: ClassSource, polygons: PolygonSettings) -> _PolygonPlan:
    """Regions of each class code but background (0) of a class map or multiclass raster."""
    mode, threshold = polygons.mode, polygons.threshold
    what = "a class map" if source.kind == CODES else "multiclass probabilities"
    if mode == "parcels":
        raise ParameterError(
            f"`mode` parcels needs a field extent or a boundary band; {raster} is {what}: "
            "its polygons are the regions of each class (`mode` regions)"
        )
    if threshold is not None:
        raise ParameterError(
            f"`threshold` does not apply to {what} ({raster}): each pixel is in one class"
        )
    codes = tuple(range(1, len(source.classes)))
    logger.info("regions of the classes of %s (%s)", raster, what)
    return _PolygonPlan(
        list(source.classes[1:]), source.bands, classes_from=source.kind, codes=codes
    )


def delineation_thresholds(
    tags: PredictionTags, polygons: PolygonSettings | None = None
) -> Delineation:
    """Extent, boundary, marker, parcel, merge, split and join levels: the ``polygons``
    options, else the tuned delineation ones, else the bands' class thresholds (the marker: the
    distance band's), else 0.5 (the parcel's mean extent, the merge, split and join: 0, off)."""
    polygons = PolygonSettings() if polygons is None else polygons
    polygons.check()
    roles = tags.roles
    band = {"extent": "extent", "boundary": "boundary", "marker": "distance"}
    stored = {k: tags.thresholds.get(roles.get(r), DEFAULT_THRESHOLD) for k, r in band.items()}
    chosen = Delineation.from_mapping(tags.delineation, Delineation.from_mapping(stored))
    if polygons.threshold is not None:
        chosen = chosen.replace(extent=polygons.threshold, boundary=polygons.threshold)
    options = {
        "extent": polygons.extent_threshold,
        "marker": polygons.marker_threshold,
        "parcel": polygons.parcel_threshold,
        "split": polygons.split,
        "join": polygons.join,
    }
    return chosen.replace(**{k: v for k, v in options.items() if v is not None})


def check_vector_path(path: str | os.PathLike) -> None:
    """Refuse an output whose suffix names no polygon format ``vectorize`` writes."""
    if Path(path).suffix.lower() not in VECTOR_FORMATS:
        names = ", ".join(f"{suffix} ({name})" for suffix, name in VECTOR_FORMATS.items())
        raise ParameterError(f"{path}: polygons are written as {names}; choose one of these")


def check_vector_options(polygons: PolygonSettings, block_size: int) -> None:
    """Refuse option values ``vectorize`` cannot use (also checked before ``predict`` runs)."""
    polygons.check()
    if block_size < 2 * PARCELS_HALO:
        raise ParameterError(f"`block_size` must be at least {2 * PARCELS_HALO}")


def check_parcels_class(mode: str, classes: list[str], source, roles=None) -> None:
    """Parcels come from a band with role ``extent`` or ``boundary`` (``roles``: role -> name;
    default: a class named ``boundary``)."""
    roles = {"boundary": "boundary"} if roles is None and "boundary" in classes else roles or {}
    if mode == "parcels" and not {"extent", "boundary"} & set(roles):
        raise ParameterError(
            f"`mode` parcels needs a field extent or a 'boundary' band; {source} has "
            f"{', '.join(classes)}"
        )
