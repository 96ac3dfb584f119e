"""Input stacks: the bands of several rasters as one raster, on the first one's grid.

A stack is a GDAL VRT, so every command reads it like any raster, window by window, and Dask
workers open it themselves. Members are resampled onto the first member's grid where theirs
differs (nearest neighbour for integer data, bilinear for floating point) and must share its CRS.
The VRT has one mask: a pixel is valid only where every member is valid, so nodata in any member
makes the stacked pixel nodata.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import numpy as np

from geoseg.errors import ParameterError, RasterError
from geoseg.io.outputs import check_apart, check_output, write_text_atomically
from geoseg.io.raster import RasterInfo, open_raster, open_raster_info
from geoseg.io.remote import absolute, gdal_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One raster of a stack: its header, the GDAL path its VRT source names, its band names."""

    info: RasterInfo
    source: str
    names: tuple[str, ...]
    stem: str = ""

    @classmethod
    def open(cls, path: str | os.PathLike) -> Member:
        info = open_raster_info(path)
        stem = Path(urlsplit(str(path)).path).stem
        return cls(info, gdal_path(absolute(path)), _band_names(stem, info.descriptions), stem)

    @property
    def resampling(self) -> str:
        """Nearest neighbour for integer data, bilinear for floating point."""
        return "nearest" if np.issubdtype(np.dtype(self.info.dtype), np.integer) else "bilinear"


def _band_names(stem: str, descriptions: Sequence[str | None]) -> tuple[str, ...]:
    """The bands' own descriptions, else the file's name (with the band number if several)."""
    if len(descriptions) == 1:
        return (descriptions[0] or stem,)
    return tuple(d or f"{stem}_{i}" for i, d in enumerate(descriptions, start=1))


def destination_rect(member: Member, grid: Member) -> tuple[float, float, float, float]:
    """Where ``member`` lies on ``grid``, in grid pixels: (x offset, y offset, width, height)."""
    to_grid = ~grid.info.transform @ member.info.transform
    x0, y0 = to_grid @ (0, 0)
    x1, y1 = to_grid @ (member.info.width, member.info.height)
    return min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)


def source_xml(
    member: Member,
    band: str,
    rect,
    *,
    scale: tuple[float, float] | None = None,
    nodata: float | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> str:
    """A VRT ComplexSource painting ``band`` (a number or ``mask,N``) of ``member`` (its
    ``window``, default all of it) onto ``rect`` of the grid, except its ``nodata`` values."""
    x, y, w, h = rect
    sx, sy, sw, sh = window or (0, 0, member.info.width, member.info.height)
    skip = "" if nodata is None else f"<NODATA>{nodata!r}</NODATA>"
    scaling = ""
    if scale is not None:
        scaling = f"<ScaleOffset>{scale[0]}</ScaleOffset><ScaleRatio>{scale[1]}</ScaleRatio>"
    return (
        f'<ComplexSource resampling="{member.resampling}">'
        f'<SourceFilename relativeToVRT="0">{escape(member.source)}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>"
        f'<SrcRect xOff="{sx}" yOff="{sy}" xSize="{sw}" ySize="{sh}"/>'
        f'<DstRect xOff="{x!r}" yOff="{y!r}" xSize="{w!r}" ySize="{h!r}"/>'
        f"{scaling}{skip}</ComplexSource>"
    )


def _mask_band(members: Sequence[Member], grid: Member) -> str:
    """255 where every member is valid, 0 elsewhere (also where a member does not reach).

    VRT sources paint over each other on a band that starts at 0: the first paints 255 over
    the pixels all members cover (the grid's mask x 0 + 255), then each member's own mask
    paints its invalid pixels 0 (its 255s are the source's nodata and leave what is there).
    """
    rects = [destination_rect(m, grid) for m in members]
    x0 = max(0, *(math.ceil(x - 1e-6) for x, _, _, _ in rects))
    y0 = max(0, *(math.ceil(y - 1e-6) for _, y, _, _ in rects))
    x1 = min(grid.info.width, *(math.floor(x + w + 1e-6) for x, _, w, _ in rects))
    y1 = min(grid.info.height, *(math.floor(y + h + 1e-6) for _, y, _, h in rects))
    common = (x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))
    sources = [source_xml(grid, "mask,1", common, scale=(255, 0), window=common)]
    for member, rect in zip(members, rects):
        sources.append(source_xml(member, "mask,1", rect, nodata=255))
    return (
        '<MaskBand><VRTRasterBand dataType="Byte">'
        + "".join(sources)
        + "</VRTRasterBand></MaskBand>"
    )


def stack_vrt(paths: Sequence[str | os.PathLike], like: str | os.PathLike | None = None) -> str:
    """The VRT XML stacking the bands of ``paths`` in order, on the first one's grid (or on
    the grid of ``like``, which then need not be stacked: one path puts it on that grid)."""
    if len(paths) < (1 if like else 2):
        raise ParameterError("a stack needs at least two rasters (or one and `like`)")
    members = [Member.open(p) for p in paths]
    grid = Member.open(like) if like else members[0]
    for member in members:
        if member.info.crs != grid.info.crs:
            raise RasterError(
                f"{member.info.path}: CRS {member.info.crs} differs from the grid's "
                f"{grid.info.crs}; reproject it first (e.g. gdalwarp -t_srs)"
            )
    dtype = np.result_type(*[np.dtype(m.info.dtype) for m in members]).name
    names = _unique_names(members)
    bands, number = [], 0
    for member in members:
        rect = destination_rect(member, grid)
        for index in range(1, member.info.count + 1):
            name = names[number]
            number += 1
            nodata = (
                ""
                if grid.info.nodata is None
                else f"<NoDataValue>{grid.info.nodata!r}</NoDataValue>"
            )
            bands.append(
                f'<VRTRasterBand dataType="{gdal_type(dtype)}" band="{number}">'
                f"<Description>{escape(name)}</Description>{nodata}"
                f"{source_xml(member, str(index), rect, nodata=member.info.nodata)}</VRTRasterBand>"
            )
    geotransform = ", ".join(repr(v) for v in grid.info.transform.to_gdal())
    return (
        f'<VRTDataset rasterXSize="{grid.info.width}" rasterYSize="{grid.info.height}">'
        f"<SRS>{escape(grid.info.crs.to_wkt()) if grid.info.crs else ''}</SRS>"
        f"<GeoTransform>{geotransform}</GeoTransform>"
        + "".join(bands)
        + _mask_band(members, grid)
        + "</VRTDataset>\n"
    )


def _unique_names(members: Sequence[Member]) -> list[str]:
    """The stacked bands' names: their own, or ``{file}_{name}`` where two files name a band
    alike (the same bands of two dates: ``june_red``, ``august_red``)."""
    names = [name for m in members for name in m.names]
    stems = [m.stem for m in members for _ in m.names]
    unique = [f"{s}_{n}" if names.count(n) > 1 else n for n, s in zip(names, stems)]
    if len(set(unique)) != len(unique):
        duplicate = next(n for n in unique if unique.count(n) > 1)
        raise ParameterError(f"two stacked bands are both named {duplicate!r}; rename a file")
    return unique


_GDAL_TYPES = {
    "uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
    "int32": "Int32", "float32": "Float32", "float64": "Float64", "int64": "Int64",
    "uint64": "UInt64",
}  # fmt: skip


def gdal_type(dtype: str) -> str:
    return _GDAL_TYPES[dtype]


def write_stack(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    like: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the stack of ``paths`` as the VRT ``out`` (see :func:`stack_vrt`)."""
    out = Path(out)
    if out.suffix.lower() != ".vrt":
        raise ParameterError(f"{out}: a stack is written as a GDAL VRT; name it .vrt")
    check_apart([out], [*paths, like])
    check_output(out, overwrite)
    write_text_atomically(out, stack_vrt(paths, like))
    with open_raster(out) as src:
        logger.info("%s: %d bands from %d rasters, %d x %d", out, src.count, len(paths),
                    src.width, src.height)  # fmt: skip
    return out
