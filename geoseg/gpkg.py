"""Stream polygons into one GeoPackage layer in a single GDAL session.

Appending to a layer call by call makes GDAL update the layer's R-tree row by row through
triggers (three times slower than the writing itself); one session builds it once at the end.
The session runs in a background thread that reads record batches from a bounded queue, so
callers push batches as they come and memory holds only a few of them.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pyarrow as pa
import pyogrio
import shapely

_END = None
_WAIT_S = 0.1


class LayerWriter:
    """Write polygons with attribute columns to ``path``'s ``layer``; ``close()`` finishes it.

    ``columns`` maps names to types ("string", "float64", "int64"); each ``write`` gets arrays
    for all of them.
    """

    def __init__(self, path, layer: str, crs: str, columns: dict, metadata: dict | None = None):
        self._fields = [pa.field(name, pa.type_for_alias(kind)) for name, kind in columns.items()]
        wkb = pa.field("geometry", pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"})
        self._schema = pa.schema([*self._fields, wkb])
        self._batches: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._open = True
        options = dict(layer=layer, driver="GPKG", crs=crs, layer_metadata=metadata)
        self._thread = threading.Thread(target=self._session, args=(path, options), daemon=True)
        self._thread.start()

    def _session(self, path, options: dict) -> None:
        stream = pa.RecordBatchReader.from_batches(self._schema, iter(self._batches.get, _END))
        try:
            pyogrio.write_arrow(
                stream, path, geometry_name="geometry", geometry_type="Polygon", **options
            )
        except BaseException as exc:  # handed to the caller's next write or close
            self._error = exc

    def write(self, geometry: np.ndarray, **arrays) -> None:
        """Append polygons (shapely, in the layer's CRS) with one array per column."""
        if len(geometry):
            columns = [pa.array(arrays[field.name], field.type) for field in self._fields]
            batch = pa.record_batch([*columns, pa.array(shapely.to_wkb(geometry))], self._schema)
            self._put(batch)

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
