"""Stream polygons into one layer of a GeoPackage, a FlatGeobuf or a GeoParquet file.

The format is the one the file's suffix names: ``.gpkg``, ``.fgb`` or ``.parquet``.

Appending to a GeoPackage layer call by call makes GDAL update the layer's R-tree row by row
through triggers (three times slower than the writing itself); one session builds it once at the
end. The session runs in a background thread that reads record batches from a bounded queue, so
callers push batches as they come and memory holds only a few of them. FlatGeobuf goes through
the same session; GeoParquet (which pyogrio's GDAL may lack) is written with pyarrow, one row
group per batch.

Layer metadata (``geoseg_source``, ``geoseg_extent``) are GDAL layer metadata in a GeoPackage or
a FlatGeobuf and schema metadata in a GeoParquet file; :func:`read_layer_metadata` reads either.
Field boundaries follow fiboa (https://fiboa.org, core v0.2.0, as Fields of The World writes
them): :func:`hectares_and_metres` measures them, and a GeoParquet file carries fiboa's
collection (its version and extensions) under the ``fiboa`` key of its metadata.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import pyproj
import shapely

from geoseg.errors import OutputWriteError, first_line

_DRIVERS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf"}  # and .parquet, written with pyarrow
_END = None
_WAIT_S = 0.1
_WKB = {"ARROW:extension:name": "geoarrow.wkb"}
_TIMESTAMP = pa.timestamp("ms", tz="UTC")  # fiboa's date-time in (Geo)Parquet

FIBOA_COLLECTION = {"fiboa_version": "0.2.0", "fiboa_extensions": []}
"""What a fiboa GeoParquet file declares under its ``fiboa`` metadata key: geoseg writes the
core properties only (``id``, ``geometry``, ``area``, ``perimeter``, ``determination_method``,
``determination_datetime``), its own columns beside them, as fiboa allows."""


def is_parquet(path) -> bool:
    """Whether ``path`` names a GeoParquet file (by its suffix)."""
    return Path(path).suffix.lower() == ".parquet"


def open_layer(
    path, layer: str, crs: str, columns: dict, metadata: dict | None = None, fiboa: bool = False
):
    """A writer of polygons to ``path`` in the format its suffix names (see :class:`LayerWriter`).

    ``path`` may be a staging name; it must end with ``.gpkg``, ``.fgb`` or ``.parquet``.
    ``fiboa``: the columns are fiboa's, which a GeoParquet file declares in its metadata.
    """
    if is_parquet(path):
        return GeoParquetWriter(path, layer, crs, columns, metadata, fiboa=fiboa)
    driver = _DRIVERS.get(Path(path).suffix.lower())
    if driver is None:
        raise ValueError(f"{path}: no polygon format for this suffix")
    return LayerWriter(path, layer, crs, columns, metadata, driver=driver)


def read_layer_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The layer metadata ``open_layer`` wrote (empty when there are none)."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        stored = pq.read_schema(path).metadata or {}
        return {k.decode(): v.decode() for k, v in stored.items() if k.startswith(b"geoseg_")}
    return pyogrio.read_info(path).get("layer_metadata") or {}


def hectares_and_metres(geometry: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """fiboa's ``area`` (hectares) and ``perimeter`` (metres) of polygons in ``crs``.

    Measured in the plane of a projected CRS, its unit converted to metres (as GIS tools
    measure); on the ellipsoid of a geographic CRS (geodesic, exact), whose degrees have no area.
    """
    crs = pyproj.CRS.from_user_input(crs)
    if crs.is_geographic:
        geod = crs.get_geod()
        measured = np.array([geod.geometry_area_perimeter(g) for g in geometry], np.float64)
        measured = measured.reshape(-1, 2)
        return np.abs(measured[:, 0]) / 1e4, measured[:, 1]
    return _in_metres(shapely.area(geometry), shapely.length(geometry), crs)


def measured_hectares_and_metres(area, length, wkb, crs) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hectares_and_metres` of WKB polygons whose planar ``area`` and ``length`` (in
    ``crs`` units) are known already; the polygons are decoded only in a geographic CRS."""
    crs = pyproj.CRS.from_user_input(crs)
    if crs.is_geographic:
        return hectares_and_metres(shapely.from_wkb(wkb), crs)
    return _in_metres(np.asarray(area), np.asarray(length), crs)


def _in_metres(area: np.ndarray, length: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    metres = crs.axis_info[0].unit_conversion_factor
    return area * metres**2 / 1e4, length * metres


def read_polygons(path: str | os.PathLike, **options):
    """A GeoDataFrame of the polygon file at ``path``; ``options`` go to the geopandas reader."""
    import geopandas as gpd

    if is_parquet(path):
        return gpd.read_parquet(path, **options)
    return gpd.read_file(path, **options)


def _arrow_type(kind: str) -> pa.DataType:
    """An Arrow type from its alias ("string", "float64", "int64"); "timestamp": UTC, in ms."""
    return _TIMESTAMP if kind == "timestamp" else pa.type_for_alias(kind)


class _Batches:
    """Attribute columns and a WKB geometry column as Arrow record batches."""

    def __init__(self, columns: dict, metadata: dict | None = None):
        self._fields = [pa.field(name, _arrow_type(kind)) for name, kind in columns.items()]
        wkb = pa.field("geometry", pa.binary(), metadata=_WKB)
        self._schema = pa.schema([*self._fields, wkb], metadata=metadata)

    def _batch(self, wkb: np.ndarray, arrays: dict) -> pa.RecordBatch:
        columns = [pa.array(arrays[field.name], field.type) for field in self._fields]
        return pa.record_batch([*columns, pa.array(wkb, pa.binary())], self._schema)

    def write(self, geometry: np.ndarray, **arrays) -> None:
        """Append polygons (shapely, in the layer's CRS) with one array per column."""
        self.write_wkb(shapely.to_wkb(geometry), **arrays)


class LayerWriter(_Batches):
    """Write polygons with attribute columns to ``path``'s ``layer``; ``close()`` finishes it.

    ``columns`` maps names to types ("string", "float64", "int64", "timestamp"); each ``write``
    gets arrays for all of them (datetime64 for a timestamp, taken as UTC). ``driver`` is a
    GDAL vector driver that takes Arrow streams.
    """

    def __init__(
        self,
        path,
        layer: str,
        crs: str,
        columns: dict,
        metadata: dict | None = None,
        driver: str = "GPKG",
    ):
        super().__init__(columns)
        self._batches: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._open = True
        options = dict(layer=layer, driver=driver, crs=crs, layer_metadata=metadata)
        self._thread = threading.Thread(target=self._session, args=(path, options), daemon=True)
        self._thread.start()

    def _session(self, path, options: dict) -> None:
        stream = pa.RecordBatchReader.from_batches(self._schema, iter(self._batches.get, _END))
        try:
            pyogrio.write_arrow(
                stream, path, geometry_name="geometry", geometry_type="Polygon", **options
            )
        except Exception as exc:  # handed to the caller's next write or close
            self._error = OutputWriteError(first_line(exc))
        except BaseException as exc:
            self._error = exc

    def write_wkb(self, wkb: np.ndarray, **arrays) -> None:
        """Append polygons as WKB (in the layer's CRS) with one array per column."""
        if len(wkb):
            self._put(self._batch(wkb, arrays))

    def close(self) -> None:
        """Finish the layer (building its spatial index); raise what the session raised."""
        if self._open:
            self._open = False
            self._put(_END)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._batches.put(item, timeout=_WAIT_S)
                return
            except queue.Full:
                continue

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # end the session without hiding the original error
            self._open = False
            try:
                self._put(_END)
            except BaseException:
                pass
            self._thread.join()


@contextmanager
def _writing():
    """Errors of the file writer (a full disk) as :class:`OutputWriteError`."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise OutputWriteError(first_line(exc)) from None


def verify_layer(path: str | os.PathLike, count: int) -> None:
    """Raise unless the polygon file at ``path`` opens and holds ``count`` features."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        found = pq.ParquetFile(path).metadata.num_rows
    else:
        found = pyogrio.read_info(path, force_feature_count=True)["features"]
    if found != count:
        raise OutputWriteError(f"{path} holds {found} features, not the {count} written")


class GeoParquetWriter(_Batches):
    """:class:`LayerWriter`'s interface for a GeoParquet file (WKB geometry, GeoParquet 1.1).

    The CRS goes into the ``geo`` metadata as PROJJSON and ``metadata`` into the schema metadata,
    where :func:`read_layer_metadata` finds it; with ``fiboa``, :data:`FIBOA_COLLECTION` goes
    under the ``fiboa`` key. A Parquet file has no layers, so ``layer`` is not stored.
    """

    def __init__(
        self,
        path,
        layer: str,
        crs: str,
        columns: dict,
        metadata: dict | None = None,
        fiboa: bool = False,
    ):
        import pyarrow.parquet as pq

        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {
                "geometry": {
                    "encoding": "WKB",
                    "geometry_types": ["Polygon"],
                    "crs": pyproj.CRS.from_user_input(crs).to_json_dict(),
                }
            },
        }
        stored = {"geo": json.dumps(geo), **(metadata or {})}
        if fiboa:
            stored["fiboa"] = json.dumps(FIBOA_COLLECTION)
        super().__init__(columns, stored)
        with _writing():
            self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")

    def write_wkb(self, wkb: np.ndarray, **arrays) -> None:
        """Append polygons as WKB (in the file's CRS) with one array per column."""
        if len(wkb):
            with _writing():
                self._writer.write_batch(self._batch(wkb, arrays))

    def close(self) -> None:
        """Write the file's footer."""
        with _writing():
            self._writer.close()

    def __enter__(self) -> GeoParquetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
