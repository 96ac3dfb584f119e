"""One window's items as a GDAL VRT: the assets as bands, the items mosaicked (least cloudy on
top) on one grid shared by every window, sources read by window over the network."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine
from pyproj import CRS

from geoseg.catalog.items import Found
from geoseg.catalog.request import Bbox
from geoseg.errors import CatalogError, first_line
from geoseg.io.raster import RasterInfo, open_raster_info
from geoseg.io.remote import gdal_path
from geoseg.io.stack import Member, destination_rect, gdal_type, source_xml

SIGNERS = ("planetary-computer",)
"""URL signing GDAL does itself at read time, so that no credential is ever written."""


def asset_path(asset, collection: str, sign: str | None) -> str:
    """The GDAL path of a pystac asset: its URL on GDAL's network file system; with
    ``sign="planetary-computer"`` a ``/vsicurl?`` path that tells GDAL to sign the URL with a
    short-lived token when it reads (the token is never written)."""
    href = asset.get_absolute_href() or asset.href
    if sign is None:
        return gdal_path(href)
    if sign == "planetary-computer":
        return f"/vsicurl?pc_url_signing=yes&pc_collection={quote(collection)}&url={quote(href)}"
    raise CatalogError(f"`sign` {sign!r} is not one of {', '.join(SIGNERS)}")


@dataclass(frozen=True)
class Grid:
    """The pixel grid of every window's VRT: the first asset's pixels, clipped to the bbox."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def as_member(self) -> Member:
        info = RasterInfo("", self.width, self.height, 0, "uint8", self.crs, self.transform,
                          None, ())  # fmt: skip
        return Member(info, "", ())


def grid_of(reference: RasterInfo, bbox: Bbox, crs: CRS) -> Grid:
    """``reference``'s pixels (size and alignment) over ``bbox`` reprojected to ``crs``."""
    if reference.crs != crs:
        raise CatalogError(f"{reference.path}: CRS {reference.crs} is not the item's {crs}")
    minx, miny, maxx, maxy = bbox.bounds_in(crs)
    t = reference.transform
    if t.b or t.d:
        raise CatalogError(f"{reference.path}: a rotated raster cannot be the mosaic's grid")
    col0, col1 = math.floor((minx - t.c) / t.a), math.ceil((maxx - t.c) / t.a)
    row0, row1 = math.floor((maxy - t.f) / t.e), math.ceil((miny - t.f) / t.e)
    transform = Affine(t.a, 0, t.c + col0 * t.a, 0, t.e, t.f + row0 * t.e)
    return Grid(crs, transform, col1 - col0, row1 - row0)


@dataclass(frozen=True)
class AssetBand:
    """What the catalogue says about one band of an asset (``raster:bands``)."""

    nodata: float | None
    scale: float
    offset: float


def asset_bands(asset) -> list[AssetBand]:
    bands = asset.extra_fields.get("raster:bands") or []
    return [
        AssetBand(b.get("nodata"), float(b.get("scale", 1.0)), float(b.get("offset", 0.0)))
        for b in bands
    ]


def open_asset(path: str, item_id: str, name: str) -> RasterInfo:
    try:
        return open_raster_info(path)
    except Exception as exc:
        raise CatalogError(
            f"asset {name} of item {item_id} cannot be read: {first_line(exc)}"
        ) from None


def window_vrt(
    chosen: list[Found], assets: list[str], grid: Grid, collection: str, sign: str | None
) -> str:
    """The VRT XML of one window: ``assets`` as bands on ``grid``, the ``chosen`` items (least
    cloudy first) painted from the last to the first, so the least cloudy is on top. Where an
    item's ``raster:bands`` scale and offset differ from the top item's, its values are
    converted to the top item's (a change of processing baseline within one window)."""
    grid_member = grid.as_member()
    bands = []
    for name in assets:
        layers = []
        for found in chosen:
            asset = found.item.assets[name]
            path = asset_path(asset, collection, sign)
            info = open_asset(path, found.id, name)
            if info.crs != grid.crs:  # a catalogue without the projection extension
                raise CatalogError(
                    f"asset {name} of item {found.id} is in {info.crs}, the mosaic in "
                    f"{grid.crs.to_string()}, and the catalogue gives no proj:code to leave it "
                    "out by: narrow `bbox` to one UTM zone"
                )
            described = asset_bands(asset)
            layers.append((Member(info, path, ()), described))
        top_info = layers[0][0].info
        for index in range(1, top_info.count + 1):
            bands.append(_band_xml(name, index, layers, grid_member, len(bands) + 1))
    geotransform = ", ".join(repr(v) for v in grid.transform.to_gdal())
    return (
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">'
        f"<SRS>{escape(grid.crs.to_wkt())}</SRS><GeoTransform>{geotransform}</GeoTransform>"
        + "".join(bands)
        + "</VRTDataset>\n"
    )


def _band_xml(name: str, index: int, layers, grid: Member, number: int) -> str:
    """Band ``index`` of asset ``name`` from every item's layer, the top item last."""
    top, top_bands = layers[0]
    top_band = _described(top_bands, index, top.info)
    dtype = np.result_type(*[np.dtype(m.info.dtype) for m, _ in layers]).name
    count = top.info.count
    description = name if count == 1 else f"{name}_{index}"
    sources = []
    for member, described in reversed(layers):
        band = _described(described, index, member.info)
        scale = None
        if (band.scale, band.offset) != (top_band.scale, top_band.offset):
            scale = ((band.offset - top_band.offset) / top_band.scale, band.scale / top_band.scale)
        rect = destination_rect(member, grid)
        sources.append(source_xml(member, str(index), rect, scale=scale, nodata=band.nodata))
    nodata = "" if top_band.nodata is None else f"<NoDataValue>{top_band.nodata!r}</NoDataValue>"
    scaling = ""
    if (top_band.scale, top_band.offset) != (1.0, 0.0):
        scaling = f"<Offset>{top_band.offset!r}</Offset><Scale>{top_band.scale!r}</Scale>"
    return (
        f'<VRTRasterBand dataType="{gdal_type(dtype)}" band="{number}">'
        f"<Description>{escape(description)}</Description>{nodata}{scaling}"
        + "".join(sources)
        + "</VRTRasterBand>"
    )


def _described(described: list[AssetBand], index: int, info: RasterInfo) -> AssetBand:
    """Band ``index``'s nodata, scale and offset: the catalogue's, else the file's nodata."""
    if index <= len(described):
        band = described[index - 1]
        return band if band.nodata is not None else AssetBand(info.nodata, band.scale,
                                                              band.offset)  # fmt: skip
    return AssetBand(info.nodata, 1.0, 0.0)
