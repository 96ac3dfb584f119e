"""The ``distance`` target: inside each parcel, the exact distance of a pixel centre to the
parcel's outline over the parcel's largest such distance on the raster's pixel grid (0 on the
outline, 1 at the centre), so that the value does not depend on where a chip or a block is cut.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import shapely
from affine import Affine

from geoseg.contracts import DISTANCE_SCALE
from geoseg.labels.burning import burn_shapes, pixel_diagonal

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
        circle = shapely.maximum_inscribed_circle(geom, tolerance=pixel_diagonal(grid) / 4)
        radius = float(shapely.length(circle))  # the depth of the circle's centre, exactly
        depth = radius - 1.01 * pixel_diagonal(grid) / 2
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
    reach = DISTANCE_TILE * pixel_diagonal(grid) * (1 + 1e-9)  # 2 r, with a rounding margin
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
