"""Labels to mask arrays on any chip grid.

Vector labels (any file geopandas reads, any CRS) are reprojected once per target CRS and put in
a spatial index, so burning one chip only touches the features that meet it. Label rasters are
resampled with nearest onto the chip grid by GDAL's warper, window by window.

With ``distance``, every polygon is a parcel: a pixel whose centre is inside one gets its exact
distance to that parcel's outline divided by the parcel's largest such distance on the raster's
pixel grid (0 on the outline, 1 at the centre; the larger where parcels overlap). Both come from
the whole parcel, so the value does not depend on where a chip or a block is cut.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from geoseg.contracts import DISTANCE_SCALE, IGNORE, default_targets
from geoseg.errors import InputFileError, LabelsError, ParameterError, first_line
from geoseg.io.raster import box_bounds, open_raster, reading
from geoseg.io.remote import is_gdal_path, local_file_missing, suffix
from geoseg.labels import gdal_burn

logger = logging.getLogger(__name__)

BOUNDARY = "boundary"
DISTANCE = "distance"
MAX_CLASSES = 255
FILE_NODATA = "file"
"""``LabelSpec.nodata`` default: a label raster's own nodata value (if it declares one)."""
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
_LINE_TYPES = {"LineString", "MultiLineString", "LinearRing"}
_AREA_TYPES = {"Polygon", "MultiPolygon"}


@dataclass(frozen=True)
class Length:
    """A distance in CRS units, or in pixels (``unit="px"``)."""

    value: float
    unit: str = "crs"

    @classmethod
    def parse(cls, text: str) -> Length:
        """Parse ``"1.5"`` (CRS units) or ``"2px"`` (pixels)."""
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px)?\s*", str(text))
        if not match or float(match.group(1)) <= 0:
            raise ParameterError(
                f"invalid length {text!r}: expected a positive number, e.g. 1.5 or 2px"
            )
        return cls(float(match.group(1)), "px" if match.group(2) else "crs")

    def in_crs_units(self, pixel_size: float) -> float:
        """The length in CRS units on a grid of ``pixel_size``."""
        return self.value * pixel_size if self.unit == "px" else self.value

    def __str__(self) -> str:
        return f"{self.value:g}px" if self.unit == "px" else f"{self.value:g}"


@dataclass(frozen=True)
class LabelSpec:
    """How to turn a label file into classes: picklable, so workers can load labels themselves."""

    path: str
    class_field: str | None = None
    classes: tuple[str, ...] | None = None
    boundary_width: Length | None = None
    nodata: float | str | None = FILE_NODATA  # label raster value to ignore; None: no nodata
    distance: bool = False  # also a ``distance`` band: the parcels' normalised inner distance
    layer: str | None = None  # the layer of a vector file of several
    sparse_reach: Length | None = None
    """Sparse labels: pixels farther than this from every feature are ignored, not background."""


def parse_label_nodata(value: float | str | None) -> float | str | None:
    """``--label-nodata``: a number, ``"none"`` (None: every value is a label) or the file's own.

    >>> parse_label_nodata("none"), parse_label_nodata("0"), parse_label_nodata("file")
    (None, 0.0, 'file')
    """
    if value is None or value == FILE_NODATA:
        return value
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"`label_nodata` must be a number or 'none', got {value!r}") from None


def is_raster_path(path: str | os.PathLike) -> bool:
    """Whether a label path names a label raster rather than a vector file."""
    return suffix(path) in RASTER_SUFFIXES


def open_labels(spec: LabelSpec) -> VectorLabels | RasterLabels:
    """Load labels once per process and file version (Dask tasks in one worker share them)."""
    if local_file_missing(spec.path):
        raise InputFileError(f"{spec.path}: no such file")
    if is_gdal_path(spec.path):  # a URL: no file version to see without a request
        return _load_labels(spec, (0, 0))
    stat = os.stat(spec.path)
    return _load_labels(spec, (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _load_labels(spec: LabelSpec, version: tuple[int, int]) -> VectorLabels | RasterLabels:
    return RasterLabels(spec) if is_raster_path(spec.path) else VectorLabels(spec)


def _check_unique(classes: list[str], path: str) -> None:
    seen: dict[str, str] = {}
    for name in classes:
        if name.lower() in seen:
            raise LabelsError(f"{path}: class names {seen[name.lower()]!r} and {name!r} collide")
        seen[name.lower()] = name


def geojson_parts(geoms: np.ndarray) -> list[dict]:
    """GeoJSON-like dicts of the single parts of polygons or of lines, for ``rasterize``.

    Built from shapely's coordinate arrays: a geometry's own ``__geo_interface__`` walks every
    coordinate in Python, which made it most of the time spent burning a cadastre.
    """
    parts = burnable_parts(geoms)
    if len(parts) == 0:
        return []
    kind, coords, offsets = shapely.to_ragged_array(parts)
    coords = list(zip(*(axis.tolist() for axis in coords.T)))  # tuples: 3x faster than lists
    if kind == shapely.GeometryType.LINESTRING:
        (ends,) = offsets
        return [
            {"type": "LineString", "coordinates": coords[a:b]} for a, b in zip(ends[:-1], ends[1:])
        ]
    ring_ends, polygon_ends = (o.tolist() for o in offsets)
    rings = [coords[a:b] for a, b in zip(ring_ends[:-1], ring_ends[1:])]
    return [
        {"type": "Polygon", "coordinates": rings[a:b]}
        for a, b in zip(polygon_ends[:-1], polygon_ends[1:])
    ]


def burnable_parts(geoms: np.ndarray) -> np.ndarray:
    """The non-empty single polygons or lines of ``geoms`` (rings as lines), as rasterio burns
    them: each part on its own, so overlapping parts do not cancel out."""
    parts = np.asarray(geoms, dtype=object)
    if (shapely.get_type_id(parts) >= shapely.GeometryType.MULTIPOINT).any():
        parts = shapely.get_parts(parts)
    is_ring = shapely.get_type_id(parts) == shapely.GeometryType.LINEARRING
    if is_ring.any():
        parts[is_ring] = shapely.linestrings([shapely.get_coordinates(r) for r in parts[is_ring]])
    return parts[~shapely.is_empty(parts)]


def burn_shapes(geoms, transform, shape, all_touched: bool = False) -> np.ndarray:
    """A uint8 0/1 mask of polygons or lines (all of one kind) on a grid.

    GDAL's rasterizer is given the parts as WKB where rasterio's GDAL can be called directly
    (no GeoJSON dicts, and without the GIL), else rasterio's ``rasterize``: the same pixels.
    """
    parts = burnable_parts(geoms)
    if not all_touched:
        parts = trimmed_to_window(parts, transform, shape)
    if len(parts) == 0:
        return np.zeros(shape, dtype=np.uint8)
    gdal = gdal_burn.rasterizer()
    if gdal is not None:
        return gdal.rasterize(
            shapely.to_wkb(parts, output_dimension=2), transform, shape, all_touched
        )
    return rasterize_parts(parts, transform, shape, all_touched)


def rasterize_parts(parts: np.ndarray, transform, shape, all_touched: bool = False) -> np.ndarray:
    """:func:`burn_shapes` of single parts through rasterio's ``rasterize``."""
    return rasterize(
        geojson_parts(parts),
        out_shape=shape,
        transform=transform,
        all_touched=all_touched,
        dtype="uint8",
    )


LARGE_POLYGON = 256
"""Polygons with more vertices than this lose, before burning, the vertices far outside the
window: GDAL's polygon fill tests every vertex on every row."""
TRIM_MARGIN = 2
"""Pixels beyond the window where vertices are dropped."""


def trimmed_to_window(parts: np.ndarray, transform, shape) -> np.ndarray:
    """Single polygons that burn the same pixel centres of a north-up window, with fewer vertices.

    GDAL fills a row between pairs of its sorted crossings with the polygon's edges, clamped to
    the window, so crossings left of the window only count by their parity, and edges above or
    below it not at all. Within each run of edges that lie wholly beyond one side of the window
    (by :data:`TRIM_MARGIN` pixels) the inner vertices go: the edge that replaces them lies on
    that side too, and crosses every row as often, modulo 2. Rings with fewer than three
    vertices left (which cross every row an even number of times, in pairs) go too.
    """
    large = shapely.get_num_coordinates(parts) > LARGE_POLYGON
    large &= shapely.get_type_id(parts) == shapely.GeometryType.POLYGON
    if not large.any() or transform.b or transform.d:
        return parts
    west, south, east, north = box_bounds(transform, *shape)
    dx, dy = TRIM_MARGIN * abs(transform.a), TRIM_MARGIN * abs(transform.e)
    beyond = (west - dx, east + dx, south - dy, north + dy)
    return np.concatenate([parts[~large], _without_far_vertices(parts[large], beyond)])


def _without_far_vertices(polygons: np.ndarray, beyond: tuple) -> np.ndarray:
    """:func:`trimmed_to_window` of polygons; ``beyond``: x west of, x east of, y south of,
    y north of which vertices are far."""
    rings, polygon_of = shapely.get_rings(polygons, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    unclosed = np.append(ring_of[1:] == ring_of[:-1], False)  # without each closing vertex
    xy, ring_of = xy[unclosed], ring_of[unclosed]
    west, east, south, north = beyond
    for far in (lambda p: p[:, 0] < west, lambda p: p[:, 0] > east,
                lambda p: p[:, 1] < south, lambda p: p[:, 1] > north):  # fmt: skip
        keep = ~_inner_run_vertices(far(xy), ring_of)
        xy, ring_of = xy[keep], ring_of[keep]
    ring_ids, sizes = np.unique(ring_of, return_counts=True)
    kept = sizes >= 3
    xy = xy[np.isin(ring_of, ring_ids[kept])]
    ring_ids, sizes = ring_ids[kept], sizes[kept]
    if len(ring_ids) == 0:
        return np.empty(0, dtype=object)
    rings = shapely.linearrings(xy, indices=np.repeat(np.arange(len(ring_ids)), sizes))
    _, polygon_index = np.unique(polygon_of[ring_ids], return_inverse=True)
    return shapely.polygons(rings, indices=polygon_index)


def _inner_run_vertices(far: np.ndarray, ring_of: np.ndarray) -> np.ndarray:
    """Vertices of rings (``ring_of``, consecutive) both of whose edges join two ``far``
    vertices (a ring wholly beyond one side loses them all)."""
    if not len(far):  # every ring already gone
        return far
    index = np.arange(len(far))
    first = np.append(True, ring_of[1:] != ring_of[:-1])
    last = np.append(ring_of[1:] != ring_of[:-1], True)
    ring = np.cumsum(first) - 1
    following, preceding = index + 1, index - 1
    following[last] = index[first][ring[last]]
    preceding[first] = index[last][ring[first]]
    far_edge = far & far[following]  # the edge from each vertex to the next
    return far_edge & far_edge[preceding]


def burn_lines(lines, transform, shape, width: float | None, bands=None) -> np.ndarray:
    """Burn lines as a connected mask: every pixel the line touches, widened to ``width``.

    ``bands`` are the lines buffered by half ``width``, where already made.
    """
    if not width:
        return burn_shapes(lines, transform, shape, all_touched=True)
    if bands is None:
        bands = shapely.buffer(np.asarray(lines), width / 2)
    band = burn_shapes(bands, transform, shape)
    if width > _pixel_diagonal(transform):
        return band  # the centre of every pixel a line touches is then inside the band
    return band | burn_shapes(lines, transform, shape, all_touched=True)


def _pixel_diagonal(transform) -> float:
    a, b, d, e = transform.a, transform.b, transform.d, transform.e
    return max(math.hypot(a + b, d + e), math.hypot(a - b, d - e))


@dataclass
class _IndexedGeometries:
    geoms: np.ndarray
    codes: np.ndarray
    is_line: np.ndarray
    tree: shapely.STRtree
    parcels: Parcels | None = None
    parcel_of: np.ndarray | None = None  # parcel index of each geometry, -1 for lines
    bands: dict[tuple[str, float, int], shapely.Geometry] = field(default_factory=dict)
    """Buffers of features met by several windows: (what, distance, feature) -> polygon."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outlines(self, ids: np.ndarray) -> np.ndarray:
        """Features ``ids`` as lines: the outlines of polygons (holes included), lines as such."""
        lines = self.geoms[ids].copy()
        areas = ~self.is_line[ids]
        lines[areas] = shapely.boundary(lines[areas])
        return lines

    def outline_bands(self, ids: np.ndarray, half_width: float, inner: tuple) -> np.ndarray:
        """The outlines of features ``ids`` buffered by ``half_width`` (see :meth:`_buffered`)."""
        return self._buffered(ids, "outline", half_width, inner)

    def reaches(self, ids: np.ndarray, reach: float, inner: tuple) -> np.ndarray:
        """Features ``ids`` grown by ``reach``: where sparse labels are known."""
        return self._buffered(ids, "feature", reach, inner)

    def _buffered(self, ids: np.ndarray, what: str, distance: float, inner: tuple) -> np.ndarray:
        """Features ``ids`` (``what``: their ``outline`` or the ``feature``) buffered by
        ``distance``.

        Those of features whose box is not inside ``inner`` (the window, less the margin by
        which windows are searched: features that other windows meet too) are buffered once
        and kept; the others are buffered here, as they are met by this window only.
        """
        bands = np.empty(len(ids), dtype=object)
        shared = np.flatnonzero(~_box_inside(shapely.bounds(self.geoms[ids]), inner))
        keys = [(what, distance, i) for i in ids[shared].tolist()]
        with self.lock:
            bands[shared] = [self.bands.get(key) for key in keys]
        todo = shapely.is_missing(bands)
        source = self.outlines(ids[todo]) if what == "outline" else self.geoms[ids[todo]]
        bands[todo] = shapely.buffer(source, distance)
        with self.lock:
            for key, band in zip(keys, bands[shared].tolist()):
                self.bands.setdefault(key, band)  # the same band whoever buffered it
        return bands


def _box_inside(bounds: np.ndarray, box: tuple) -> np.ndarray:
    """Whether each of ``bounds`` (n, 4: west, south, east, north) lies inside ``box``."""
    west, south, east, north = box
    return (
        (bounds[:, 0] > west)
        & (bounds[:, 1] > south)
        & (bounds[:, 2] < east)
        & (bounds[:, 3] < north)
    )


class VectorLabels:
    """Polygons and lines, burned per class; optional ``boundary`` class from their outlines."""

    def __init__(self, spec: LabelSpec):
        if spec.nodata != FILE_NODATA:
            raise ParameterError("`label_nodata` applies to a label raster, not vector labels")
        self.spec = spec
        frame = _read_vector(spec.path, spec.layer)
        frame = frame.explode(index_parts=False)  # also splits collections
        frame = frame[frame.geometry.geom_type.isin(_AREA_TYPES | _LINE_TYPES)]
        if frame.empty:
            raise LabelsError(f"{spec.path}: labels contain no polygons or lines")
        names, codes = _class_codes(frame, spec)
        self.feature_classes = names
        extra = [BOUNDARY] if spec.boundary_width else []
        self.classes = names + extra + ([DISTANCE] if spec.distance else [])
        _check_unique(self.classes, spec.path)
        keep = codes >= 0
        if not keep.any():
            raise LabelsError(f"{spec.path}: no feature has a class in field {spec.class_field!r}")
        self._crs = frame.crs
        self._is_line = frame.geometry.geom_type.isin(_LINE_TYPES).to_numpy()[keep]
        if spec.distance and self._is_line.all():
            raise LabelsError(
                f"{spec.path}: labels hold lines only: `distance` needs parcel polygons"
            )
        self._codes = codes[keep]
        geoms = np.asarray(frame.geometry.values[keep], dtype=object)
        # repair polygons without turning them into collections (which have no outline)
        broken = ~self._is_line & ~shapely.is_valid(geoms)
        geoms[broken] = shapely.make_valid(geoms[broken], method="structure", keep_collapsed=False)
        self._geoms = geoms
        self._indexed: dict[str, _IndexedGeometries] = {}
        self._lock = threading.Lock()
        logger.info("%s: %d features, classes %s", spec.path, len(geoms), ", ".join(self.classes))
        if self.is_extent and self._is_line.any():
            into = "the boundary only" if spec.boundary_width else "no target (no boundary)"
            logger.info(
                "%s: %d line features (fences, ditches, hedges) go into %s, never the extent",
                spec.path, int(self._is_line.sum()), into,
            )  # fmt: skip

    @property
    def is_extent(self) -> bool:
        """Whether the features are a field extent: one class with polygons. Its lines (fences,
        ditches, hedges drawn between fields) then belong to the boundary alone."""
        return len(self.feature_classes) == 1 and not self._is_line.all()

    @property
    def targets(self) -> dict[str, dict]:
        """Each band's kind and role: a single class of polygons is the field extent."""
        targets = default_targets(self.classes)
        if self.is_extent:
            targets[self.feature_classes[0]]["role"] = "extent"
        if self.spec.distance:
            targets[DISTANCE] = {"kind": "regression", "role": "distance"}
        return targets

    def _in_crs(self, crs: CRS) -> _IndexedGeometries:
        key = crs.to_wkt()
        with self._lock:
            if key not in self._indexed:
                geoms = self._geoms
                if not CRS.from_user_input(self._crs) == crs:
                    geoms = gpd.GeoSeries(geoms, crs=self._crs).to_crs(crs).values
                    geoms = np.asarray(geoms, dtype=object)
                indexed = _IndexedGeometries(
                    geoms, self._codes, self._is_line, shapely.STRtree(geoms)
                )
                if self.spec.distance:  # every polygon is a parcel, whatever its class
                    indexed.parcels = Parcels(geoms[~self._is_line])
                    indexed.parcel_of = np.cumsum(~self._is_line) - 1
                    indexed.parcel_of[self._is_line] = -1
                self._indexed[key] = indexed
            return self._indexed[key]

    def overlaps(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Whether any feature meets the box ``bounds`` given in ``crs``."""
        indexed = self._in_crs(crs)
        return len(indexed.tree.query(shapely.box(*bounds), predicate="intersects")) > 0

    def burn(
        self, crs: CRS, transform, shape: tuple[int, int], pixel_size: float, grid=None
    ) -> np.ndarray:
        """Masks for a grid: uint8 (classes, height, width) of 0/1; ``distance`` 0..254.

        ``grid`` is the transform of the raster whose pixel grid ``transform`` lies on (default:
        ``transform``): the distance is normalised per parcel on that grid, so any window of
        the raster gets the same values.
        """
        indexed = self._in_crs(crs)
        width = (
            self.spec.boundary_width.in_crs_units(pixel_size) if self.spec.boundary_width else None
        )
        reach = self.spec.sparse_reach.in_crs_units(pixel_size) if self.spec.sparse_reach else 0
        margin = max((width or 0) / 2, reach) + pixel_size
        west, south, east, north = box_bounds(transform, *shape)
        hits = indexed.tree.query(
            shapely.box(west - margin, south - margin, east + margin, north + margin)
        )
        out = np.zeros((len(self.classes), *shape), dtype=np.uint8)
        if len(hits) == 0:
            return np.full_like(out, IGNORE) if reach else out
        codes, is_line = indexed.codes[hits], indexed.is_line[hits]
        inner = (west + margin, south + margin, east - margin, north - margin)
        bands = indexed.outline_bands(hits, width / 2, inner) if width else None
        for k in range(len(self.feature_classes)):
            areas, lines = (codes == k) & ~is_line, (codes == k) & is_line
            if areas.any():
                out[k] = burn_shapes(indexed.geoms[hits[areas]], transform, shape)
            if lines.any() and not self.is_extent:
                lines_bands = bands[lines] if width else None
                out[k] |= burn_lines(
                    indexed.geoms[hits[lines]], transform, shape, width, lines_bands
                )
        if self.spec.boundary_width:
            outlines = indexed.outlines(hits)
            out[len(self.feature_classes)] = burn_lines(outlines, transform, shape, width, bands)
        if self.spec.distance:
            parcels = indexed.parcel_of[hits]
            out[-1] = indexed.parcels.burn(parcels[parcels >= 0], transform, shape, grid)
        if reach:  # beyond every drawn feature's reach nothing is known: not background
            near = burn_shapes(indexed.reaches(hits, reach, inner), transform, shape)
            out[:, near == 0] = IGNORE
        return out


def ignored_background(labels, spec: LabelSpec) -> str | None:
    """Why a label raster's background is ignored, when its own nodata (0) is the background
    value and nothing overrides it; None otherwise. Tile and evaluate say it alike."""
    if isinstance(labels, RasterLabels) and spec.nodata == FILE_NODATA and labels.nodata == 0:
        return (
            f"{Path(spec.path).name} declares nodata 0, so its background (0) is ignored; "
            "give `label_nodata` none if 0 means background"
        )
    return None


def _natural_key(name: str) -> tuple:
    """Sort numeric class values as numbers (2 before 10), others as text."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def vector_layer(path: str, layer: str | None = None) -> str | None:
    """The layer to read from the vector file ``path``: ``layer``, or the file's only layer;
    a file of several layers needs one named (never silently its first)."""
    import pyogrio

    try:
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{path}: not a readable vector file ({first_line(exc)})") from None
    if layer is not None and layer not in names:
        raise LabelsError(f"{path}: no layer {layer!r} (layers: {', '.join(names)})")
    if layer is None and len(names) > 1:
        raise LabelsError(
            f"{path} holds {len(names)} layers ({', '.join(names)}): name the one to use"
        )
    return layer


def _read_vector(path: str, layer: str | None = None) -> gpd.GeoDataFrame:
    from geoseg.io.vector_files import is_parquet, read_polygons

    parquet = is_parquet(path)  # GeoParquet, as geoseg writes it, whatever GDAL can read
    layer = None if parquet else vector_layer(path, layer)
    try:
        if parquet:
            frame = read_polygons(path)
        else:
            frame = gpd.read_file(path, engine="pyogrio", layer=layer)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{path}: not a readable vector file ({first_line(exc)})") from None
    if frame.crs is None:
        raise LabelsError(f"{path}: labels have no CRS")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    return frame


def category_text(column: pd.Series, spec: LabelSpec) -> pd.Series:
    """A class field as text; floats only when all are whole numbers (3.0 reads as "3")."""
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.dropna().to_numpy(dtype=np.float64)
        if not (np.isfinite(values) & (values == np.round(values))).all():
            raise LabelsError(
                f"{spec.path}: class field {spec.class_field!r} holds {column.dtype} values: "
                "a class field needs categories (text or integers; whole numbers stored as "
                "floats, such as 3.0, are read as integers)"
            )
        column = column.astype("Int64")
    return column.astype("string")


def _class_codes(frame: gpd.GeoDataFrame, spec: LabelSpec) -> tuple[list[str], np.ndarray]:
    """Class names in band order and each feature's class index (-1: not a wanted class)."""
    if spec.class_field is None:
        name = spec.classes[0] if spec.classes else spec.layer or Path(spec.path).stem
        if spec.classes and len(spec.classes) > 1:
            raise ParameterError("`classes` names several classes: give `class_field` too")
        return [name], np.zeros(len(frame), dtype=np.int64)
    if spec.class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
        raise LabelsError(
            f"{spec.path}: unknown class field {spec.class_field!r} (fields: {fields})"
        )
    values = category_text(frame[spec.class_field], spec)
    present = sorted(set(values.dropna()), key=_natural_key)
    if not spec.classes and len(present) > MAX_CLASSES:
        raise LabelsError(
            f"{spec.path}: class field {spec.class_field!r} holds {len(present)} distinct values, "
            f"more than {MAX_CLASSES} classes: pick some with `classes`"
        )
    if spec.classes:
        missing = [c for c in spec.classes if c not in present]
        if missing:
            raise LabelsError(
                f"{spec.path}: class {missing[0]!r} not found in field {spec.class_field!r} "
                f"(values: {', '.join(present[:10])})"
            )
        names = list(spec.classes)
    else:
        names = present
    lookup = {name: i for i, name in enumerate(names)}
    codes = values.map(lookup).astype("float64").fillna(-1).astype(np.int64).to_numpy()
    return names, codes


class RasterLabels:
    """A single-band label raster of integer class codes (0 = background, nodata = ignore).

    ``spec.nodata`` overrides the file's nodata value; None makes every value a label.
    """

    def __init__(self, spec: LabelSpec):
        if spec.boundary_width:
            raise ParameterError("`boundary_width` needs vector labels, not a label raster")
        if spec.distance:
            raise ParameterError("`distance` needs parcel polygons as labels, not a label raster")
        if spec.class_field:
            raise ParameterError("`class_field` applies to vector labels, not a label raster")
        if spec.sparse_reach:
            raise ParameterError(
                "`sparse_labels` applies to vector labels; a label raster marks what is not "
                "labelled with its nodata"
            )
        self.spec = spec
        with open_raster(spec.path) as src:
            if src.crs is None:
                raise LabelsError(f"{spec.path}: label raster has no CRS")
            self._crs, self._bounds = src.crs, src.bounds
            self.nodata = src.nodata if spec.nodata == FILE_NODATA else spec.nodata
            if spec.classes:
                self.codes = list(range(1, len(spec.classes) + 1))
                self.classes = list(spec.classes)
            else:
                self.codes = _unique_codes(src, self.nodata)
                self.classes = [f"class_{c}" for c in self.codes]
        if not self.codes:
            raise LabelsError(f"{spec.path}: label raster holds no non-zero class codes")
        logger.info(
            "%s: label raster, nodata %s, classes %s",
            spec.path,
            self.nodata,
            ", ".join(self.classes),
        )

    @property
    def targets(self) -> dict[str, dict]:
        """Each band's kind and role: classes without a role."""
        return {name: {"kind": "class", "role": None} for name in self.classes}

    def overlaps(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the label raster meets the box ``bounds`` given in ``crs``."""
        west, south, east, north = transform_bounds(self._crs, crs, *self._bounds)
        return west < bounds[2] and east > bounds[0] and south < bounds[3] and north > bounds[1]

    def burn(
        self, crs: CRS, transform, shape: tuple[int, int], pixel_size: float, grid=None
    ) -> np.ndarray:
        """Masks for a grid: 0/1 per class, 255 where the label raster has no data."""
        values = np.full(shape, np.nan, dtype=np.float64)
        with open_raster(self.spec.path) as src:
            window = _source_window(src, crs, transform, shape)
            if window is not None:
                with reading(self.spec.path):
                    source = src.read(1, window=window)
                # an array source: GDAL then uses no nodata but ours (the file's, or none)
                reproject(
                    source,
                    values,
                    src_transform=src.window_transform(window),
                    src_crs=src.crs,
                    src_nodata=self.nodata,
                    dst_transform=transform,
                    dst_crs=crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.nearest,
                )
        out = np.stack([(values == code) for code in self.codes]).astype(np.uint8)
        out[:, np.isnan(values)] = IGNORE
        return out


def _source_window(src, crs: CRS, transform, shape: tuple[int, int]) -> Window | None:
    """The label raster's window under a grid, with a margin; None where they do not meet."""
    bounds = transform_bounds(crs, src.crs, *box_bounds(transform, *shape), densify_pts=21)
    window = from_bounds(*bounds, transform=src.transform)
    col0, row0 = math.floor(window.col_off) - 2, math.floor(window.row_off) - 2
    col1 = math.ceil(window.col_off + window.width) + 2
    row1 = math.ceil(window.row_off + window.height) + 2
    try:
        return Window(col0, row0, col1 - col0, row1 - row0).intersection(
            Window(0, 0, src.width, src.height)
        )
    except WindowError:  # no overlap
        return None


def _unique_codes(src, nodata: float | None) -> list[int]:
    """Distinct non-zero values of band 1 other than ``nodata``, read block by block."""
    codes: set[int] = set()
    with reading(src.name):
        for _, window in src.block_windows(1):
            values = src.read(1, window=window).ravel()
            keep = np.isfinite(values) if values.dtype.kind == "f" else slice(None)
            values = np.unique(values[keep])
            if nodata is not None:
                values = values[(values != nodata) & ~(np.isnan(nodata) & np.isnan(values))]
            codes.update(int(v) for v in values)
    codes.discard(0)
    return sorted(codes)


DENSE_SEGMENTS = 64
"""Parcels with more outline segments than this are measured tile by tile (when many pixels are
asked for), with the segments that can be nearest in each tile only."""
FEW_POINTS = 4096
"""Fewer pixel centres than this are measured against all segments at once (point x segment
arrays); more, segment by segment over all points. Both give bit-identical distances."""
SMALL_BOX = 1 << 14
"""Parcels whose box holds at most this many pixels are measured whole (to find their largest
distance) and tested centre by centre (which pixels they hold): cheaper than GDAL's set-up."""
PAIRS = 1 << 15
"""Point x segment pairs per array when measuring few points."""
DISTANCE_TILE = 32
"""Side in pixels of the tiles of the raster's grid over which segments are pruned."""
MAX_POINTS = 1 << 20
"""Pixel centres handled at once when finding a parcel's largest distance."""


class Parcels:
    """Polygons of one CRS as parcels of the distance target.

    Keeps each parcel's outline as segments and, per pixel grid, its largest distance from a
    pixel centre inside it to its outline (the normaliser, found once per parcel and grid).
    """

    def __init__(self, geoms: np.ndarray):
        self.geoms = np.asarray(geoms, dtype=object)
        shapely.prepare(self.geoms)
        self.segments, self.starts = outline_segments(self.geoms)
        self._scales: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    def burn(self, ids: np.ndarray, transform, shape: tuple[int, int], grid=None) -> np.ndarray:
        """The uint8 ``distance`` band of parcels ``ids`` on a window ``transform`` of ``grid``."""
        grid = transform if grid is None else grid
        row0, col0 = grid_offset(grid, transform)
        scales = self.scales(grid, ids)
        value = np.zeros(shape, dtype=np.float64)
        for i, scale in zip(ids.tolist(), scales.tolist()):
            span = _window_span(grid, self.geoms[i], (row0, col0, *shape))
            if span is None:
                continue
            inside = _centres_inside(self.geoms[i], grid, span)
            r0, r1, c0, c1 = span
            rr, cc = np.nonzero(inside)
            rows, cols = rr + r0, cc + c0
            x, y = pixel_centres(grid, rows, cols)
            d = np.minimum(self.distance(i, x, y, rows, cols, grid) / scale, 1.0)
            window = value[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
            window[inside] = np.maximum(window[inside], d)
        return np.rint(value * DISTANCE_SCALE).astype(np.uint8)

    def distance(self, i: int, x, y, rows, cols, grid) -> np.ndarray:
        """Exact distances from pixel centres (``rows``, ``cols``) to parcel ``i``'s outline."""
        segments = self.segments[self.starts[i] : self.starts[i + 1]]
        if len(segments) <= DENSE_SEGMENTS or len(x) < FEW_POINTS:
            return segment_distance(x, y, segments)
        return _pruned_distance(x, y, rows, cols, segments, grid)

    def scales(self, grid, ids: np.ndarray) -> np.ndarray:
        """The normaliser of parcels ``ids`` on ``grid``: their largest pixel-centre distance."""
        key = tuple(grid)[:6]
        with self._lock:
            scales = self._scales.setdefault(key, np.full(len(self.geoms), np.nan))
        for i in ids[np.isnan(scales[ids])].tolist():
            scales[i] = self._largest_distance(i, grid)  # the same value whoever computes it
        return scales[ids]

    def _largest_distance(self, i: int, grid) -> float:
        """The largest distance to the outline of a pixel centre inside parcel ``i``.

        Some pixel centre lies within half a pixel diagonal of the inscribed circle's centre,
        so only centres at least that much less deep than its radius are candidates: those of
        the parcel shrunk by that depth (a thin ridge), not of the whole parcel. Small parcels
        are measured whole.
        """
        geom = self.geoms[i]
        r0, r1, c0, c1 = _pixel_span(grid, geom)
        if (r1 - r0) * (c1 - c0) <= SMALL_BOX:
            return self._deepest(i, geom, grid) or 1.0  # 0: no pixel centre inside, unused
        circle = shapely.maximum_inscribed_circle(geom, tolerance=_pixel_diagonal(grid) / 4)
        radius = float(shapely.length(circle))  # the depth of the circle's centre, exactly
        depth = radius - 1.01 * _pixel_diagonal(grid) / 2
        ridge = shapely.buffer(geom, -depth) if depth > 0 else geom
        best = self._deepest(i, ridge if not shapely.is_empty(ridge) else geom, grid)
        if best <= 0 and ridge is not geom:
            best = self._deepest(i, geom, grid)
        return best if best > 0 else max(radius, 1e-12)  # no pixel centre inside: unused

    def _deepest(self, i: int, region, grid) -> float:
        """The largest outline distance of the pixel centres of parcel ``i`` inside ``region``."""
        best = 0.0
        for rows, cols in _lattice_chunks(grid, region):
            x, y = pixel_centres(grid, rows, cols)
            keep = shapely.contains_xy(self.geoms[i], x, y)
            if region is not self.geoms[i]:
                keep &= shapely.intersects_xy(region, x, y)
            if keep.any():
                d = self.distance(i, x[keep], y[keep], rows[keep], cols[keep], grid)
                best = max(best, float(d.max()))
        return best


def _centres_inside(geom, grid, span: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (rows, cols) of the pixels of ``span`` (r0, r1, c0, c1) whose centres are in
    ``geom``: exactly for few pixels, with GDAL's pixel-centre rule (as the extent band) for many.
    The two can differ only for centres on the outline, whose distance is 0 either way."""
    r0, r1, c0, c1 = span
    if (r1 - r0) * (c1 - c0) <= SMALL_BOX:
        rows, cols = np.mgrid[r0:r1, c0:c1]
        return shapely.contains_xy(geom, *pixel_centres(grid, rows, cols))
    inner = grid @ Affine.translation(c0, r0)
    return burn_shapes([geom], inner, (r1 - r0, c1 - c0)).view(bool)


def outline_segments(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline segments (n, 4: x0, y0, x1, y1) of polygons, grouped by polygon, and the offsets
    (len(geoms) + 1) of each polygon's segments; rings of holes are outline too."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    same = coord_of[1:] == coord_of[:-1]
    segments = np.hstack([coords[:-1], coords[1:]])[same]
    owner = part_of[ring_of[coord_of[:-1][same]]]
    real = (segments[:, 0] != segments[:, 2]) | (segments[:, 1] != segments[:, 3])
    segments, owner = segments[real], owner[real]
    return segments, np.searchsorted(owner, np.arange(len(geoms) + 1))


def segment_distance(x: np.ndarray, y: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Exact distances from points to the nearest of ``segments`` (n, 4: x0, y0, x1, y1)."""
    if len(x) < FEW_POINTS:
        return _pairwise_distance(x, y, segments)
    best = np.full(np.shape(x), np.inf)
    px, py, t, work = (np.empty(np.shape(x)) for _ in range(4))
    for x0, y0, x1, y1 in segments.tolist():  # in place: a few arrays, however many segments
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        np.subtract(x, x0, out=px)
        np.subtract(y, y0, out=py)
        np.multiply(px, dx / length2, out=t)
        np.multiply(py, dy / length2, out=work)
        t += work
        np.clip(t, 0.0, 1.0, out=t)
        px -= np.multiply(t, dx, out=work)
        py -= np.multiply(t, dy, out=work)
        np.multiply(px, px, out=px)
        np.multiply(py, py, out=py)
        px += py
        np.minimum(best, px, out=best)
    return np.sqrt(best, out=best)


def _pairwise_distance(x: np.ndarray, y: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """:func:`segment_distance` over point x segment arrays, in the same arithmetic."""
    x0, y0, x1, y1 = segments.T
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    ux, uy = dx / length2, dy / length2
    out = np.full(len(x), np.inf)
    step = max(1, PAIRS // max(len(segments), 1))
    for start in range(0, len(x) if len(segments) else 0, step):
        px = x[start : start + step, None] - x0
        py = y[start : start + step, None] - y0
        t = px * ux
        t += py * uy
        np.clip(t, 0.0, 1.0, out=t)
        px -= t * dx
        py -= t * dy
        px *= px
        py *= py
        px += py
        out[start : start + step] = px.min(axis=1)
    return np.sqrt(out, out=out)


def _pruned_distance(x, y, rows, cols, segments, grid) -> np.ndarray:
    """:func:`segment_distance` per tile of the grid, with the segments that can be nearest.

    For points within ``r`` of a tile's centre ``c``, the nearest segment is at most
    ``min d(c) + 2 r`` from ``c``. Tiles lie on the raster's grid, so the result does not depend
    on which pixels are asked for together.
    """
    out = np.empty(np.shape(x))
    tiles, tile_of = np.unique(
        np.stack([rows // DISTANCE_TILE, cols // DISTANCE_TILE]), axis=1, return_inverse=True
    )
    centres = pixel_centres(grid, *(tiles * DISTANCE_TILE + (DISTANCE_TILE - 1) / 2))
    reach = DISTANCE_TILE * _pixel_diagonal(grid) * (1 + 1e-9)  # 2 r, with a rounding margin
    order = np.argsort(tile_of.ravel(), kind="stable")
    bounds = np.searchsorted(tile_of.ravel()[order], np.arange(1, tiles.shape[1]))
    for t, members in enumerate(np.split(order, bounds)):
        to_centre = _distances_to_segments(centres[0][t], centres[1][t], segments)
        near = segments[to_centre <= to_centre.min() + reach]
        out[members] = segment_distance(x[members], y[members], near)
    return out


def _distances_to_segments(x: float, y: float, segments: np.ndarray) -> np.ndarray:
    """Distances from one point to each segment, vectorised over segments."""
    x0, y0, x1, y1 = segments.T
    dx, dy, px, py = x1 - x0, y1 - y0, x - x0, y - y0
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - t * dx, py - t * dy)


def grid_offset(grid, transform) -> tuple[int, int]:
    """Row and column of ``transform``'s first pixel on ``grid``."""
    col, row = ~grid @ (transform.c, transform.f)
    return round(row), round(col)


def pixel_centres(grid, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of the centres of pixels ``rows``, ``cols`` of ``grid``.

    Always computed from the raster's own transform and whole pixel indices, so one pixel gets
    bit-identical coordinates in every window.
    """
    rows, cols = np.asarray(rows, dtype=np.float64) + 0.5, np.asarray(cols, dtype=np.float64) + 0.5
    return grid.a * cols + grid.b * rows + grid.c, grid.d * cols + grid.e * rows + grid.f


def _pixel_span(grid, geom) -> tuple[int, int, int, int]:
    """Rows and columns (first, end) of ``grid`` whose centres may lie in ``geom``'s box."""
    west, south, east, north = shapely.bounds(geom)
    xs, ys = np.array([west, east, east, west]), np.array([south, south, north, north])
    cols, rows = ~grid @ (xs, ys)
    return (
        math.floor(rows.min() - 0.5),
        math.ceil(rows.max() - 0.5) + 1,
        math.floor(cols.min() - 0.5),
        math.ceil(cols.max() - 0.5) + 1,
    )


def _window_span(grid, geom, window: tuple[int, int, int, int]):
    """Rows and columns (first, end) of ``window`` (row0, col0, height, width) of ``grid`` whose
    centres may lie in ``geom``'s bounding box; None where there are none."""
    r0, r1, c0, c1 = _pixel_span(grid, geom)
    row0, col0, height, width = window
    r0, r1 = max(r0, row0), min(r1, row0 + height)
    c0, c1 = max(c0, col0), min(c1, col0 + width)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _lattice_chunks(grid, geom):
    """Rows and columns of the pixels of ``grid`` under ``geom``'s bounding box, in chunks of at
    most :data:`MAX_POINTS` pixels, so a huge parcel never needs a huge array."""
    r0, r1, c0, c1 = _pixel_span(grid, geom)
    step = max(1, MAX_POINTS // max(c1 - c0, 1))
    for start in range(r0, r1, step):
        rows, cols = np.mgrid[start : min(start + step, r1), c0:c1]
        yield rows.ravel(), cols.ravel()
