"""GDAL's rasterizer called on WKB, in the GDAL library rasterio itself runs on.

rasterio's ``rasterize`` builds every geometry from GeoJSON in Python while holding the GIL;
labels of a cadastre spend most of their burning time there. This calls the same C function
(``GDALRasterizeGeometries``, same options, a MEM dataset over a numpy array) on geometries
read from WKB, and the calls release the GIL. Where rasterio's GDAL cannot be found or is
another version, :func:`rasterizer` returns None and callers use rasterio's ``rasterize``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import struct
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine

from geoseg.errors import LabelsError

logger = logging.getLogger(__name__)

_BYTE = 1  # GDALDataType GDT_Byte
_POINTER = ctypes.c_void_p
_SIGNATURES = {  # name: (result, arguments), as in GDAL's C API
    "GDALVersionInfo": (ctypes.c_char_p, [ctypes.c_char_p]),
    "GDALAllRegister": (None, []),
    "GDALGetDriverByName": (_POINTER, [ctypes.c_char_p]),
    "GDALCreate": (_POINTER, [_POINTER, ctypes.c_char_p] + [ctypes.c_int] * 4 + [_POINTER]),
    "GDALAddBand": (ctypes.c_int, [_POINTER, ctypes.c_int, _POINTER]),
    "GDALSetGeoTransform": (ctypes.c_int, [_POINTER, _POINTER]),
    "GDALClose": (None, [_POINTER]),
    "OGR_G_CreateFromWkb": (ctypes.c_int, [ctypes.c_char_p, _POINTER, _POINTER, ctypes.c_int]),
    "OGR_G_DestroyGeometry": (None, [_POINTER]),
    "GDALRasterizeGeometries": (
        ctypes.c_int,
        [_POINTER, ctypes.c_int, _POINTER, ctypes.c_int, _POINTER]
        + [_POINTER, _POINTER, _POINTER, _POINTER, _POINTER, _POINTER],
    ),
}


def _c_strings(*items: str) -> ctypes.Array:
    """A NULL-terminated C array of strings (GDAL's option lists)."""
    return (ctypes.c_char_p * (len(items) + 1))(*(item.encode() for item in items), None)


class _GdalRasterizer:
    """GDAL's ``GDALRasterizeGeometries`` on WKB, in the very library rasterio runs on.

    rasterio's ``rasterize`` calls the same function with the same options on a MEM dataset of
    the same geotransform, after building each geometry from GeoJSON in Python; this builds
    them from WKB, and the calls release the GIL.
    """

    def __init__(self, library: ctypes.CDLL):
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(library, name)
            function.restype, function.argtypes = result, arguments
        self._gdal = library
        if not library.GDALGetDriverByName(b"MEM"):
            library.GDALAllRegister()
        self._mem = library.GDALGetDriverByName(b"MEM")
        self._collect = False
        self._collect = self._burns_collections_by_part()

    def rasterize(self, wkbs: np.ndarray, transform, shape, all_touched: bool) -> np.ndarray:
        """A uint8 0/1 mask of single polygons or lines given as WKB."""
        out = np.zeros(shape, dtype=np.uint8)
        if self._collect:
            wkbs = np.array([collection_wkb(wkbs)], dtype=object)
        handles = self._geometries(wkbs)
        try:
            self._burn(out, transform, handles, all_touched)
        finally:
            for handle in handles:
                self._gdal.OGR_G_DestroyGeometry(handle)
        return out

    def _burns_collections_by_part(self) -> bool:
        """Whether GDAL burns each part of a collection on its own, as separate geometries (it
        does since 3.x in its default "replace" mode): then one collection replaces thousands
        of geometries. Checked on overlapping squares and crossing lines."""
        squares = shapely.box([0, 2], [0, 2], [6, 8], [6, 8])
        lines = shapely.linestrings([[(0, 0), (8, 8)], [(0, 8), (8, 0)], [(0.5, 0), (0.5, 8)]])
        grid, shape = Affine(0.7, 0.1, 0, 0.05, -0.7, 8), (12, 12)
        for parts, touched in ((squares, False), (lines, True)):
            wkbs = shapely.to_wkb(parts, output_dimension=2)
            alone = self.rasterize(wkbs, grid, shape, touched)
            together = self.rasterize(
                np.array([collection_wkb(wkbs)], dtype=object), grid, shape, touched
            )
            if not alone.any() or not np.array_equal(alone, together):
                return False
        return True

    def _geometries(self, wkbs: np.ndarray) -> ctypes.Array:
        """OGR geometries of ``wkbs``; the caller destroys them."""
        handles = (_POINTER * len(wkbs))()
        address, step = ctypes.addressof(handles), ctypes.sizeof(_POINTER)
        for i, wkb in enumerate(wkbs.tolist()):
            if self._gdal.OGR_G_CreateFromWkb(wkb, None, address + i * step, len(wkb)) != 0:
                for handle in handles[:i]:
                    self._gdal.OGR_G_DestroyGeometry(handle)
                raise LabelsError("GDAL could not read a label geometry")
        return handles

    def _burn(self, out: np.ndarray, transform, handles: ctypes.Array, all_touched: bool) -> None:
        """Burn 1 into ``out`` through a MEM dataset over its memory."""
        height, width = out.shape
        dataset = self._gdal.GDALCreate(self._mem, b"", width, height, 0, _BYTE, None)
        if not dataset:
            raise LabelsError("GDAL could not create an in-memory raster to burn labels into")
        try:
            pointer = f"DATAPOINTER={out.ctypes.data}"
            band = _c_strings(pointer, "PIXELOFFSET=1", f"LINEOFFSET={width}")
            geotransform = (ctypes.c_double * 6)(*transform.to_gdal())
            options = ["ALL_TOUCHED=TRUE"] if all_touched else []
            values = np.ones(len(handles))
            failed = (
                self._gdal.GDALAddBand(dataset, _BYTE, band)
                or self._gdal.GDALSetGeoTransform(dataset, geotransform)
                or self._gdal.GDALRasterizeGeometries(
                    dataset,
                    1,
                    (ctypes.c_int * 1)(1),
                    len(handles),
                    handles,
                    None,
                    None,
                    values.ctypes.data,
                    _c_strings(*options, "MERGE_ALG=REPLACE"),
                    None,
                    None,
                )  # fmt: skip
            )
        finally:
            self._gdal.GDALClose(dataset)
        if failed:
            raise LabelsError("GDAL could not burn the labels")


def collection_wkb(wkbs: np.ndarray) -> bytes:
    """The WKB of a geometry collection of geometries given as WKB."""
    return struct.pack("<BII", 1, 7, len(wkbs)) + b"".join(wkbs.tolist())


@functools.cache
def rasterizer() -> _GdalRasterizer | None:
    """The rasterizer on rasterio's own GDAL; None where that library cannot be found (then
    rasterio's ``rasterize`` burns) or the environment variable GEOSEG_RASTERIZE=rasterio."""
    path = _loaded_library("libgdal")
    if path is None or os.environ.get("GEOSEG_RASTERIZE") == "rasterio":
        return None
    try:
        library = ctypes.CDLL(path)
        library.GDALVersionInfo.restype = ctypes.c_char_p
        if library.GDALVersionInfo(b"RELEASE_NAME").decode() != rasterio.__gdal_version__:
            return None
        return _GdalRasterizer(library)
    except (OSError, AttributeError) as exc:
        logger.debug("labels burned through rasterio: %s", exc)
        return None


def _loaded_library(stem: str) -> str | None:
    """The path of rasterio's copy of a shared library of this process whose name starts with
    ``stem`` (Linux): the one in rasterio's wheel, else the only one (a system library)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {Path(line.split()[-1]) for line in maps if f"/{stem}" in line}
    except OSError:
        return None
    paths = [p for p in paths if p.name.startswith(stem) and ".so" in p.name]
    bundled = [p for p in paths if p.parent.name.startswith("rasterio")]
    chosen = bundled or paths
    return str(chosen[0]) if len(chosen) == 1 else None
