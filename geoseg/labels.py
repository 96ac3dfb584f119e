"""Labels to mask arrays on any chip grid.

Vector labels (any file geopandas reads, any CRS) are reprojected once per target CRS and put in
a spatial index, so burning one chip only touches the features that meet it. Label rasters are
resampled with nearest onto the chip grid by GDAL's warper, window by window.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from geoseg.errors import InputFileError, LabelsError, ParameterError, first_line
from geoseg.raster import box_bounds, reading

logger = logging.getLogger(__name__)

BOUNDARY = "boundary"
IGNORE = 255
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
        raise ParameterError(f"--label-nodata must be a number or 'none', got {value!r}") from None


def is_raster_path(path: str | os.PathLike) -> bool:
    """Whether a label path names a label raster rather than a vector file."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def open_labels(spec: LabelSpec) -> VectorLabels | RasterLabels:
    """Load labels once per process and file version (Dask tasks in one worker share them)."""
    if not Path(spec.path).exists():
        raise InputFileError(f"{spec.path}: no such file")
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
    parts = shapely.get_parts(np.asarray(geoms, dtype=object))
    is_ring = shapely.get_type_id(parts) == shapely.GeometryType.LINEARRING
    if is_ring.any():
        parts[is_ring] = shapely.linestrings([shapely.get_coordinates(r) for r in parts[is_ring]])
    parts = parts[~shapely.is_empty(parts)]
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


def burn_shapes(geoms, transform, shape, all_touched: bool = False) -> np.ndarray:
    """A uint8 0/1 mask of polygons or lines (all of one kind) on a grid."""
    shapes = geojson_parts(geoms)
    if not shapes:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(
        shapes, out_shape=shape, transform=transform, all_touched=all_touched, dtype="uint8"
    )


def burn_lines(lines, transform, shape, width: float | None) -> np.ndarray:
    """Burn lines as a connected mask: every pixel the line touches, widened to ``width``."""
    if not width:
        return burn_shapes(lines, transform, shape, all_touched=True)
    band = burn_shapes(shapely.buffer(np.asarray(lines), width / 2), transform, shape)
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


class VectorLabels:
    """Polygons and lines, burned per class; optional ``boundary`` class from their outlines."""

    def __init__(self, spec: LabelSpec):
        if spec.nodata != FILE_NODATA:
            raise ParameterError("--label-nodata applies to a label raster, not vector labels")
        self.spec = spec
        frame = _read_vector(spec.path).explode(index_parts=False)  # also splits collections
        frame = frame[frame.geometry.geom_type.isin(_AREA_TYPES | _LINE_TYPES)]
        if frame.empty:
            raise LabelsError(f"{spec.path}: labels contain no polygons or lines")
        names, codes = _class_codes(frame, spec)
        self.feature_classes = names
        self.classes = names + ([BOUNDARY] if spec.boundary_width else [])
        _check_unique(self.classes, spec.path)
        keep = codes >= 0
        if not keep.any():
            raise LabelsError(f"{spec.path}: no feature has a class in field {spec.class_field!r}")
        self._crs = frame.crs
        self._is_line = frame.geometry.geom_type.isin(_LINE_TYPES).to_numpy()[keep]
        self._codes = codes[keep]
        geoms = np.asarray(frame.geometry.values[keep], dtype=object)
        # repair polygons without turning them into collections (which have no outline)
        broken = ~self._is_line & ~shapely.is_valid(geoms)
        geoms[broken] = shapely.make_valid(geoms[broken], method="structure", keep_collapsed=False)
        self._geoms = geoms
        self._indexed: dict[str, _IndexedGeometries] = {}
        self._lock = threading.Lock()
        logger.info("%s: %d features, classes %s", spec.path, len(geoms), ", ".join(self.classes))

    def _in_crs(self, crs: CRS) -> _IndexedGeometries:
        key = crs.to_wkt()
        with self._lock:
            if key not in self._indexed:
                geoms = self._geoms
                if not CRS.from_user_input(self._crs) == crs:
                    geoms = gpd.GeoSeries(geoms, crs=self._crs).to_crs(crs).values
                    geoms = np.asarray(geoms, dtype=object)
                self._indexed[key] = _IndexedGeometries(
                    geoms, self._codes, self._is_line, shapely.STRtree(geoms)
                )
            return self._indexed[key]

    def overlaps(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Whether any feature meets the box ``bounds`` given in ``crs``."""
        indexed = self._in_crs(crs)
        return len(indexed.tree.query(shapely.box(*bounds), predicate="intersects")) > 0

    def burn(self, crs: CRS, transform, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Masks for a grid: uint8 (classes, height, width) of 0/1."""
        indexed = self._in_crs(crs)
        width = (
            self.spec.boundary_width.in_crs_units(pixel_size) if self.spec.boundary_width else None
        )
        margin = (width or 0) / 2 + pixel_size
        west, south, east, north = box_bounds(transform, *shape)
        hits = indexed.tree.query(
            shapely.box(west - margin, south - margin, east + margin, north + margin)
        )
        out = np.zeros((len(self.classes), *shape), dtype=np.uint8)
        if len(hits) == 0:
            return out
        geoms, codes, is_line = indexed.geoms[hits], indexed.codes[hits], indexed.is_line[hits]
        for k in range(len(self.feature_classes)):
            areas = geoms[(codes == k) & ~is_line]
            lines = geoms[(codes == k) & is_line]
            if len(areas):
                out[k] = burn_shapes(areas, transform, shape)
            if len(lines):
                out[k] |= burn_lines(lines, transform, shape, width)
        if self.spec.boundary_width:
            outlines = np.concatenate([shapely.boundary(geoms[~is_line]), geoms[is_line]])
            outlines = outlines[~shapely.is_empty(outlines)]
            if len(outlines):
                out[-1] = burn_lines(outlines, transform, shape, width)
        return out


def _natural_key(name: str) -> tuple:
    """Sort numeric class values as numbers (2 before 10), others as text."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _read_vector(path: str) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{path}: not a readable vector file ({first_line(exc)})") from None
    if frame.crs is None:
        raise LabelsError(f"{path}: labels have no CRS")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    return frame


def _category_text(column: pd.Series, spec: LabelSpec) -> pd.Series:
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
        name = spec.classes[0] if spec.classes else Path(spec.path).stem
        if spec.classes and len(spec.classes) > 1:
            raise ParameterError("--classes names several classes: give --class-field too")
        return [name], np.zeros(len(frame), dtype=np.int64)
    if spec.class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
        raise LabelsError(
            f"{spec.path}: unknown class field {spec.class_field!r} (fields: {fields})"
        )
    values = _category_text(frame[spec.class_field], spec)
    present = sorted(set(values.dropna()), key=_natural_key)
    if not spec.classes and len(present) > MAX_CLASSES:
        raise LabelsError(
            f"{spec.path}: class field {spec.class_field!r} holds {len(present)} distinct values, "
            f"more than {MAX_CLASSES} classes: pick some with --classes"
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
            raise ParameterError("--boundary-width needs vector labels, not a label raster")
        if spec.class_field:
            raise ParameterError("--class-field applies to vector labels, not a label raster")
        self.spec = spec
        with rasterio.open(spec.path) as src:
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

    def overlaps(self, crs: CRS, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the label raster meets the box ``bounds`` given in ``crs``."""
        west, south, east, north = transform_bounds(self._crs, crs, *self._bounds)
        return west < bounds[2] and east > bounds[0] and south < bounds[3] and north > bounds[1]

    def burn(self, crs: CRS, transform, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Masks for a grid: 0/1 per class, 255 where the label raster has no data."""
        values = np.full(shape, np.nan, dtype=np.float64)
        with rasterio.open(self.spec.path) as src:
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
