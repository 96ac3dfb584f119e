"""Burning geometries into pixel grids: polygons (their parts, trimmed to the window first
when they are large) and lines of a width, with GDAL's rules or rasterio's."""

from __future__ import annotations

import math

import numpy as np
import shapely
from rasterio.features import rasterize

from geoseg.io.raster import box_bounds
from geoseg.labels import gdal_burn


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
    if width > pixel_diagonal(transform):
        return band  # the centre of every pixel a line touches is then inside the band
    return band | burn_shapes(lines, transform, shape, all_touched=True)


def pixel_diagonal(transform) -> float:
    a, b, d, e = transform.a, transform.b, transform.d, transform.e
    return max(math.hypot(a + b, d + e), math.hypot(a - b, d - e))
