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
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from geoseg.contracts import IGNORE, default_targets
from geoseg.errors import InputFileError, LabelsError, ParameterError, first_line
from geoseg.io.raster import box_bounds, open_raster, reading
from geoseg.io.remote import is_gdal_path, local_file_missing, suffix
from geoseg.labels.burning import burn_lines, burn_shapes
from geoseg.labels.distance import Parcels

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
