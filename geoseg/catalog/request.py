"""What a search asks for: a bounding box and date windows, checked before any request."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from geoseg.errors import ParameterError

WGS84 = CRS.from_epsg(4326)


@dataclass(frozen=True)
class Bbox:
    """A bounding box in longitude and latitude (west, south, east, north), as STAC asks, and
    as it was given (``given`` in ``crs``)."""

    west: float
    south: float
    east: float
    north: float
    given: tuple[float, float, float, float]
    crs: CRS

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)

    def bounds_in(self, crs: CRS) -> tuple[float, float, float, float]:
        """The box in ``crs``: as given where that is its CRS, else reprojected (enclosing)."""
        if crs == self.crs:
            return self.given
        transformer = Transformer.from_crs(self.crs, crs, always_xy=True)
        return transformer.transform_bounds(*self.given, densify_pts=21)


@dataclass(frozen=True)
class DateWindow:
    """A closed interval of days, ``start/end`` as STAC writes it."""

    start: dt.date
    end: dt.date

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    @property
    def stem(self) -> str:
        """The window as a file name stem: ``2024-04-01_2024-05-31``."""
        return f"{self.start.isoformat()}_{self.end.isoformat()}"


def parse_bbox(values, crs: str = "EPSG:4326") -> Bbox:
    """Four numbers (minx, miny, maxx, maxy) in ``crs`` as a :class:`Bbox` in longitude and
    latitude; an empty box or one across the antimeridian is refused."""
    if isinstance(values, str):
        values = values.split(",")
    try:
        minx, miny, maxx, maxy = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ParameterError(
            f"`bbox` must be four numbers minx,miny,maxx,maxy; got {values!r}"
        ) from None
    try:
        source = CRS.from_user_input(crs)
    except CRSError:
        raise ParameterError(f"`bbox_crs` {crs!r} is not a CRS (e.g. EPSG:4326)") from None
    if source == WGS84 and minx > maxx:
        raise ParameterError(
            f"`bbox` {minx},{miny},{maxx},{maxy} crosses the antimeridian (west > east): "
            "search each side of it on its own"
        )
    if not (minx < maxx and miny < maxy):
        raise ParameterError(f"`bbox` {minx},{miny},{maxx},{maxy} is empty (min >= max)")
    given = (minx, miny, maxx, maxy)
    if source != WGS84:
        to_wgs84 = Transformer.from_crs(source, WGS84, always_xy=True)
        minx, miny, maxx, maxy = to_wgs84.transform_bounds(*given, densify_pts=21)
        if minx > maxx:
            raise ParameterError("`bbox` crosses the antimeridian: search each side on its own")
    if not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
        raise ParameterError(
            f"`bbox` {minx},{miny},{maxx},{maxy} is outside longitude -180..180 and latitude "
            "-90..90: is `bbox_crs` right?"
        )
    return Bbox(minx, miny, maxx, maxy, given, source)


def parse_window(text: str) -> DateWindow:
    """``YYYY-MM-DD/YYYY-MM-DD`` as a :class:`DateWindow`."""
    parts = str(text).split("/")
    try:
        start, end = (dt.date.fromisoformat(p.strip()) for p in parts)
    except ValueError:
        raise ParameterError(
            f"`dates` {text!r} must be a window START/END of days, e.g. 2024-04-01/2024-05-31"
        ) from None
    if start > end:
        raise ParameterError(f"`dates` {text!r} ends before it starts")
    return DateWindow(start, end)
