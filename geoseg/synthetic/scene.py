"""Synthetic cadastre scenes: farmland seen from above, with its parcels as ground truth.

Parcels come from a Voronoi tessellation drawn per zone in a rotated, stretched frame, so fields
vary in size, shape and orientation. Each parcel has a crop with its own colour, texture and
row direction; field edges are hedges, tracks, roads or not visible at all; farmsteads add
buildings. Land that is not farmed (roads with their verges, farmyards, a village with streets,
houses and gardens, water and woods) is cut out of the parcels and written to landcover.gpkg, so
a model has to learn the field extent, not just the boundaries. The image is rendered and
written window by window, so memory does not depend on the scene size.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.errors import ParameterError
from geoseg.io.outputs import check_output, staged_directory
from geoseg.io.raster import chip_windows

logger = logging.getLogger(__name__)

WINDOW = 512
NON_FIELD = 0.2  # default share of the scene that is not parcels

# Colours as (R, G, B, NIR) on a 0..255 reflectance-like scale.
CROPS = {
    "wheat": ((188, 168, 108, 125), 0.10),
    "maize": ((72, 112, 52, 205), 0.18),
    "grassland": ((92, 140, 72, 220), 0.0),
    "bare_soil": ((138, 108, 84, 100), 0.22),
    "rapeseed": ((208, 198, 64, 190), 0.12),
    "stubble": ((172, 158, 124, 112), 0.15),
}
EDGES = {  # colour, width in metres, share of edges
    "none": (None, 0.0, 0.40),
    "hedge": ((36, 62, 32, 150), 5.0, 0.25),
    "track": ((166, 150, 128, 118), 3.0, 0.25),
    "road": ((108, 108, 114, 80), 7.0, 0.10),
}
ROOFS = [(158, 72, 56, 62), (118, 118, 124, 70), (90, 60, 50, 50)]
SHADOW = (34, 34, 40, 22)
# Land that is not parcels, in the order it claims ground: colour, texture contrast, and the
# sizes in metres of its fine and coarse texture (tree crowns and clumps, gravel and patches).
COVER = {
    "road": ((108, 108, 114, 80), 0.04, (1.0, 12.0)),
    "verge": ((116, 136, 82, 185), 0.16, (1.2, 8.0)),
    "farmyard": ((150, 143, 130, 105), 0.10, (2.0, 10.0)),
    "village": ((98, 138, 74, 205), 0.12, (2.0, 8.0)),
    "water": ((22, 38, 52, 10), 0.05, (6.0, 80.0)),
    "wood": ((44, 68, 40, 168), 0.30, (3.5, 18.0)),
}
GARDENS = {  # colour, share of village gardens
    "lawn": ((98, 140, 74, 210), 0.45),
    "beds": ((126, 104, 80, 115), 0.20),
    "trees": ((52, 80, 46, 172), 0.25),
    "paving": ((152, 148, 142, 100), 0.10),
}
HA = 10_000.0  # square metres
GRID = 1e-4  # pixels: overlays of non-field land snap to it (robust, valid in map coordinates)


@dataclass
class SynthSummary:
    """What ``synth`` wrote."""

    out: Path
    size: int
    parcels: int
    buildings: int
    edges: dict[str, int]
    non_field: float = 0.0  # share of the scene that is not parcels
    cover: dict[str, float] = field(default_factory=dict)  # that share per kind of land

    def describe(self) -> str:
        """One line for a terminal."""
        edges = ", ".join(f"{n} {k}" for k, n in self.edges.items())
        kinds = ", ".join(f"{k} {v:.1%}" for k, v in self.cover.items() if v > 0)
        return (
            f"wrote a {self.size}x{self.size} scene to {self.out}: {self.parcels} parcels, "
            f"{self.non_field:.1%} non-field land" + (f" ({kinds})" if kinds else "") + ", "
            f"{self.buildings} buildings, field edges: {edges}"
        )


def _no_geoms() -> np.ndarray:
    return np.empty(0, dtype=object)


@dataclass
class Scene:
    """Vector layout of a scene, in pixel coordinates (x = column, y = row)."""

    parcels: np.ndarray  # Polygon per parcel
    crop: np.ndarray  # crop index per parcel
    brightness: np.ndarray
    row_angle: np.ndarray
    row_period: np.ndarray
    edges: np.ndarray  # LineString per field edge
    edge_kind: np.ndarray  # index into EDGES per edge
    buildings: np.ndarray  # Polygon per building
    roof: np.ndarray
    cover: np.ndarray = field(default_factory=_no_geoms)  # Polygon per piece of non-field land
    cover_kind: np.ndarray = field(default_factory=lambda: np.empty(0, int))  # index into COVER
    gardens: np.ndarray = field(default_factory=_no_geoms)  # village gardens (inside cover)
    garden_kind: np.ndarray = field(default_factory=lambda: np.empty(0, int))  # into GARDENS

    def cover_shares(self, size: int) -> dict[str, float]:
        """Share of the ``size`` x ``size`` scene covered by each kind of non-field land."""
        areas = np.bincount(self.cover_kind, shapely.area(self.cover), minlength=len(COVER))
        return {k: float(a) / size**2 for k, a in zip(COVER, areas, strict=True)}


def synth(
    out: str,
    *,
    size: int = 4096,
    seed: int = 0,
    bands: int = 3,
    dtype: str = "uint8",
    crs: str = "EPSG:32633",
    resolution: float = 0.5,
    buildings: bool = True,
    non_field: float = NON_FIELD,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic scene to ``out``: image.tif, parcels.gpkg, landcover.gpkg, buildings.gpkg.

    ``non_field`` is the share of the scene (0 to 0.9) given to land that is not parcels:
    roads and verges, farmyards, villages, water and woods. 0 gives an all-field scene.
    """
    if size < 64:
        raise ParameterError(f"`size` must be at least 64, got {size}")
    if bands not in (3, 4):
        raise ParameterError(f"`bands` must be 3 or 4, got {bands}")
    if dtype not in ("uint8", "uint16"):
        raise ParameterError(f"`dtype` must be uint8 or uint16, got {dtype}")
    if resolution <= 0:
        raise ParameterError(f"`resolution` must be positive, got {resolution}")
    if not 0 <= non_field <= 0.9:
        raise ParameterError(f"`non_field` must be between 0 and 0.9, got {non_field}")
    try:
        crs = CRS.from_user_input(crs)
    except CRSError:
        raise ParameterError(f"unknown CRS {crs!r}") from None
    check_output(out, overwrite)

    rng = np.random.default_rng(seed)
    scene = layout(size, resolution, rng, with_buildings=buildings, non_field=non_field)
    origin = (500_000.0, 5_300_000.0) if crs.is_projected else (10.0, 50.0)
    transform = Affine.translation(*origin) @ Affine.scale(resolution, -resolution)
    texture = _texture_field(rng, resolution)
    with staged_directory(out, overwrite) as staging:
        _write_image(
            staging / "image.tif",
            scene,
            size,
            bands,
            dtype,
            crs,
            transform,
            resolution,
            texture,
            seed,
            progress,
        )
        _write_vectors(staging, scene, crs, transform)
    kinds = list(EDGES)
    shares = scene.cover_shares(size)
    return SynthSummary(
        Path(out),
        size,
        len(scene.parcels),
        len(scene.buildings),
        {k: int((scene.edge_kind == i).sum()) for i, k in enumerate(kinds)},
        sum(shares.values()),
        shares,
    )


def layout(
    size: int,
    resolution: float,
    rng: np.random.Generator,
    with_buildings: bool = True,
    non_field: float = 0.0,
) -> Scene:
    """Draw zones, parcels, field edges, buildings and ``non_field`` of non-field land.

    The fields are drawn from ``rng`` whatever ``non_field`` is, and the non-field land from a
    child of it, so a scene with non-field land is the all-field scene with land cut out.
    """
    cover_rng = rng.spawn(1)[0]
    extent = shapely.box(0, 0, size, size)
    side_m = size * resolution
    n_zones = int(np.clip(round((side_m / 900) ** 2), 1, 400))
    zones = _voronoi(rng.uniform(0, size, (max(n_zones, 2), 2)), extent)
    parcels, crop, angle, edges, kinds = [], [], [], [], []
    for zone in zones:
        theta = rng.uniform(0, math.pi)
        stretch = rng.uniform(1.0, 3.0)
        mean_area_px = rng.uniform(0.6, 5.0) * 10_000 / resolution**2  # 0.6 to 5 ha
        n = max(2, int(rng.poisson(zone.area / mean_area_px)))
        cells, zone_edges = _stretched_voronoi(zone, n, theta, stretch, rng)
        parcels.extend(cells)
        crop.extend(rng.integers(0, len(CROPS), len(cells)))
        # rows mostly follow the zone's long axis, sometimes across it
        angle.extend(
            theta + rng.choice([0, 0, math.pi / 2], len(cells)) + rng.normal(0, 0.05, len(cells))
        )
        edges.extend(zone_edges)
        kinds.extend(rng.choice(len(EDGES), len(zone_edges), p=[v[2] for v in EDGES.values()]))
    borders = _explode_lines(
        shapely.intersection(
            shapely.voronoi_polygons(
                shapely.multipoints([z.centroid for z in zones]), only_edges=True, extend_to=extent
            ),
            extent,
        )
    )
    if n_zones > 1:
        edges.extend(borders)
        kinds.extend(rng.choice([2, 3], len(borders), p=[0.4, 0.6]))  # tracks and roads
    parcels = np.array(parcels, dtype=object)
    n = len(parcels)
    houses, roofs, owners = (
        _farmsteads(parcels, np.array(angle), resolution, rng) if with_buildings else ([], [], [])
    )
    scene = Scene(
        parcels=parcels,
        crop=np.array(crop, dtype=int),
        brightness=rng.normal(1.0, 0.07, n),
        row_angle=np.array(angle),
        row_period=rng.uniform(3.0, 14.0, n) / resolution,
        edges=np.array(edges, dtype=object),
        edge_kind=np.array(kinds, dtype=int),
        buildings=np.array(houses, dtype=object),
        roof=np.array(roofs, dtype=int),
    )
    if non_field > 0:
        scene = _add_non_field(
            scene, np.array(owners, dtype=int), non_field, size, resolution, cover_rng
        )
    return scene


def _voronoi(points: np.ndarray, extent: shapely.Polygon) -> list[shapely.Polygon]:
    cells = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=extent)
    cells = shapely.intersection(shapely.get_parts(cells), extent)
    return [c for c in cells if c.area > 0]


def _stretched_voronoi(zone, n, theta, stretch, rng):
    """Voronoi cells of random points in ``zone``, elongated by ``stretch`` along ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    # to_iso rotates by -theta then shrinks x; to_pixels is its inverse
    to_iso = [c / stretch, s / stretch, -s, c, 0, 0]
    a, b, d, e = to_iso[:4]
    det = a * e - b * d
    to_pixels = [e / det, -b / det, -d / det, a / det, 0, 0]
    points = _points_in(zone, n, rng)
    iso = shapely.affinity.affine_transform(shapely.multipoints(points), to_iso)
    iso_zone = shapely.affinity.affine_transform(zone, to_iso)
    cells = shapely.voronoi_polygons(iso, extend_to=iso_zone)
    cells = shapely.get_parts(shapely.affinity.affine_transform(cells, to_pixels))
    edges = shapely.voronoi_polygons(iso, extend_to=iso_zone, only_edges=True)
    edges = shapely.affinity.affine_transform(edges, to_pixels)
    cells = [
        g for g in shapely.intersection(cells, zone) if g.area > 1 and g.geom_type == "Polygon"
    ]
    # only interior edges: the zone's outline is drawn as a zone border
    inner = shapely.intersection(edges, shapely.buffer(zone, -0.5))
    return cells, _explode_lines(inner)


def _points_in(polygon, n: int, rng: np.random.Generator) -> np.ndarray:
    xmin, ymin, xmax, ymax = polygon.bounds
    found = np.empty((0, 2))
    while len(found) < n:
        cand = rng.uniform((xmin, ymin), (xmax, ymax), (n * 2, 2))
        found = np.vstack([found, cand[shapely.contains_xy(polygon, cand[:, 0], cand[:, 1])]])
    return found[:n]


def _explode_lines(geom) -> list:
    parts = shapely.get_parts(
        shapely.line_merge(geom) if geom.geom_type == "MultiLineString" else geom
    )
    return [p for p in parts if p.geom_type == "LineString" and p.length > 0]


def _farmsteads(parcels, angles, resolution, rng):
    """A few clusters of rotated rectangular buildings, each inside one parcel (its owner)."""
    houses, roofs, owners = [], [], []
    chosen = rng.choice(len(parcels), max(1, len(parcels) // 8), replace=False)
    for i in chosen:
        parcel = parcels[i]
        inner = shapely.buffer(parcel, -8 / resolution)
        if inner.is_empty:
            continue
        centre = _points_in(inner, 1, rng)[0]
        for _ in range(rng.integers(1, 5)):
            length, width = rng.uniform(10, 30) / resolution, rng.uniform(8, 15) / resolution
            offset = rng.normal(0, 15 / resolution, 2)
            house = shapely.box(-length / 2, -width / 2, length / 2, width / 2)
            house = shapely.affinity.rotate(house, angles[i], origin=(0, 0), use_radians=True)
            house = shapely.affinity.translate(house, *(centre + offset))
            if parcel.contains(house) and not any(house.intersects(h) for h in houses):
                houses.append(house)
                roofs.append(int(rng.integers(len(ROOFS))))
                owners.append(int(i))
    return houses, roofs, owners


# --- non-field land -------------------------------------------------------------------------


def _add_non_field(
    scene: Scene,
    owners: np.ndarray,
    share: float,
    size: int,
    resolution: float,
    rng: np.random.Generator,
) -> Scene:
    """Cut roads, farmyards, villages, water and woods, ``share`` of the scene, out of parcels.

    Each kind only takes ground that the kinds before it left free, in this order: roads and
    verges, water, farmyards (of the farmsteads left), villages (whose streets cross verges),
    woods; the woods fill the scene up to ``share``. Parts of parcels left too small or too
    thin to farm become verge.
    """
    m = 1 / resolution  # pixels per metre
    extent = shapely.box(0, 0, size, size)
    target = share * size**2
    road_lines = scene.edges[scene.edge_kind == list(EDGES).index("road")]
    road, verge = map(_valid, _road_corridors(road_lines, extent, m, rng))
    rest = max(target - shapely.area(shapely.union(road, verge)), 0.0)
    village_goal, water_goal = rest * rng.uniform(0.2, 0.35), rest * rng.uniform(0.15, 0.3)
    river, lakes = map(_valid, _water(water_goal, extent, size, m, rng))
    # roads end at lakes and bridge rivers
    road, verge = _valid(shapely.difference(road, lakes)), _valid(shapely.difference(verge, lakes))
    taken = shapely.union(road, verge)
    water = _valid(shapely.union(shapely.difference(river, taken), lakes))
    taken = _valid(shapely.union(taken, water))
    # farmsteads that a road or water took are gone
    gone = shapely.intersects(scene.buildings, taken)
    houses, roofs, owners = scene.buildings[~gone], scene.roof[~gone], owners[~gone]
    yard = _valid(shapely.difference(_farmyards(houses, owners, scene.parcels, m, rng), taken))
    taken = _valid(shapely.union(taken, yard))
    blocked = shapely.union_all([road, yard, water])
    village, streets, homes, home_roofs, gardens, garden_kind = _villages(
        village_goal, road_lines, blocked, taken, extent, m, rng
    )
    village, streets = _valid(village), _valid(streets)
    # streets cross the verges to meet the roads
    road, verge = _valid(shapely.union(road, streets)), _valid(shapely.difference(verge, streets))
    taken = _valid(shapely.union_all([taken, streets, village]))
    wood = _valid(
        _woods(target - shapely.area(taken), scene.parcels, owners, taken, extent, m, rng)
    )
    taken = _valid(shapely.union(taken, wood))

    parts, source, slivers = _cut_parcels(scene.parcels, taken, m, size)
    verge = shapely.union(verge, slivers)
    cover, cover_kind = _pieces([road, verge, yard, village, water, wood])
    edges, edge_kind = _clip_edges(scene.edges, scene.edge_kind, taken, lakes)
    logger.debug(
        "non-field land: %.1f%% of the scene asked, %.1f%% drawn",
        100 * share,
        100 * shapely.area(cover).sum() / size**2,
    )
    return Scene(
        parcels=parts,
        crop=scene.crop[source],
        brightness=scene.brightness[source],
        row_angle=scene.row_angle[source],
        row_period=scene.row_period[source],
        edges=edges,
        edge_kind=edge_kind,
        buildings=np.concatenate([houses, homes]),
        roof=np.concatenate([roofs, home_roofs]).astype(int),
        cover=cover,
        cover_kind=cover_kind,
        gardens=gardens,
        garden_kind=garden_kind,
    )


def _valid(geom):
    """``geom`` as it is when valid, else its polygonal part made valid."""
    if shapely.is_valid(geom):
        return geom
    parts = shapely.get_parts(shapely.make_valid(geom))
    return shapely.union_all(parts[shapely.get_dimensions(parts) == 2])


def _road_corridors(lines, extent, m, rng):
    """Roadway along road edges and a grass verge each side (round joints close junctions)."""
    if not len(lines):
        return shapely.Polygon(), shapely.Polygon()
    half = EDGES["road"][1] / 2 * m
    road = shapely.intersection(shapely.union_all(shapely.buffer(lines, half)), extent)
    outer = shapely.union_all(shapely.buffer(lines, half + rng.uniform(1.5, 4.0) * m))
    return road, shapely.difference(shapely.intersection(outer, extent), road)


def _farmyards(houses, owners, parcels, m, rng):
    """A yard around each farmstead: its buildings' rotated envelope and a margin, in its parcel."""
    yards = []
    for owner in np.unique(owners):
        group = shapely.multipolygons(houses[owners == owner])
        margin = rng.uniform(6.0, 14.0) * m
        yard = shapely.buffer(shapely.oriented_envelope(group), margin, join_style="mitre")
        yards.append(shapely.intersection(yard, parcels[owner]))
    return shapely.union_all(yards) if yards else shapely.Polygon()


def _blobs(centres, areas, rng, elongation=(1.0, 2.0), roughness=0.3, vertices=48):
    """Star-shaped polygons of the given ``areas``: wobbly, elongated, randomly turned."""
    n = len(centres)
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    k = np.arange(2, 7)
    amp = rng.uniform(0, roughness, (n, len(k))) * (2 / k)
    phase = rng.uniform(0, 2 * np.pi, (n, len(k)))
    r = 1 + (amp[..., None] * np.cos(k[None, :, None] * theta + phase[..., None])).sum(1)
    r = np.maximum(r, 0.25)
    stretch = np.sqrt(rng.uniform(*elongation, n))[:, None]
    x, y = r * np.cos(theta) * stretch, r * np.sin(theta) / stretch
    turn = rng.uniform(0, np.pi, n)[:, None]
    x, y = x * np.cos(turn) - y * np.sin(turn), x * np.sin(turn) + y * np.cos(turn)
    area = 0.5 * np.abs((x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1))
    scale = np.sqrt(np.asarray(areas) / area)[:, None]
    ring = np.stack([centres[:, :1] + scale * x, centres[:, 1:] + scale * y], -1)
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], 1))


def _villages(goal, road_lines, blocked, taken, extent, m, rng):
    """Villages of ``goal`` px² in all, at road junctions: outline, streets, houses, gardens.

    Streets take any ground but ``blocked`` (roads, farmyards); the rest of the village takes
    what ``taken`` leaves.
    """
    nothing = (shapely.Polygon(), shapely.Polygon(), _no_geoms(), np.empty(0, int))
    if goal < 0.5 * HA * m**2:
        return (*nothing, _no_geoms(), np.empty(0, int))
    n = int(np.ceil(goal / (12 * HA * m**2)))
    areas = goal / n * rng.uniform(0.8, 1.2, n)
    centres = _junctions(road_lines, extent, n, rng)
    # a ribbon of plots along the roads through the centre and a few side streets, as long as
    # makes the area (arms: the side streets and the road's two ways out)
    per, depth = rng.integers(2, 5, n), rng.uniform(30, 45) * m
    reach = np.clip(areas / (2 * depth * 0.8 * (per + 2)), 40 * m, 800 * m)
    at = np.repeat(np.arange(n), per)
    turn = rng.uniform(0, 2 * np.pi, len(at))
    ends = centres[at] + (reach[at] * rng.uniform(0.6, 1.1, len(at)))[:, None] * np.column_stack(
        [np.cos(turn), np.sin(turn)]
    )
    side = shapely.linestrings(np.stack([centres[at], ends], 1))
    near = shapely.union_all(shapely.buffer(shapely.points(centres), reach))
    through = shapely.intersection(shapely.union_all(road_lines), near)
    outline = shapely.intersection(
        shapely.buffer(shapely.union_all([*side, through]), depth), extent
    )
    lines = shapely.intersection(side, outline)
    streets = shapely.difference(
        shapely.intersection(shapely.union_all(shapely.buffer(lines, 2.5 * m)), outline), blocked
    )
    village = shapely.difference(outline, shapely.union(taken, streets))
    along = np.array(
        _explode_lines(shapely.intersection(shapely.union_all([*lines, *road_lines]), outline)),
        dtype=object,
    )
    houses = _houses_along(along, village, m, rng)
    roofs = rng.integers(0, len(ROOFS), len(houses))
    gardens, kinds = _gardens(houses, village, m, rng)
    return village, streets, houses, roofs, gardens, kinds


def _junctions(road_lines, extent, n, rng):
    """``n`` points at road junctions or bends inside ``extent`` (anywhere without roads)."""
    xmin, ymin, xmax, ymax = extent.bounds
    inner = shapely.buffer(extent, -0.15 * (xmax - xmin))
    points = shapely.get_coordinates(road_lines) if len(road_lines) else np.empty((0, 2))
    points = points[shapely.contains_xy(inner, points[:, 0], points[:, 1])]
    if len(points) >= n:
        return points[rng.choice(len(points), n, replace=False)]
    return rng.uniform(xmin + 0.2 * (xmax - xmin), xmin + 0.8 * (xmax - xmin), (n, 2))


def _houses_along(lines, village, m, rng):
    """Rectangular houses facing the street on both sides of ``lines``, inside ``village``."""
    if not len(lines):
        return _no_geoms()
    spacing = rng.uniform(16, 26) * m
    length = shapely.length(lines)
    count = np.floor(length / spacing).astype(int)
    line = np.repeat(np.arange(len(lines)), count)
    first = np.repeat(np.cumsum(count) - count, count)
    d = (np.arange(len(line)) - first + 0.5) * spacing
    line, d = np.tile(line, 2), np.tile(d, 2) + rng.normal(0, 2 * m, 2 * len(d))
    side = np.repeat([1.0, -1.0], len(d) // 2)
    d = np.clip(d, m, length[line] - m)
    ahead = shapely.get_coordinates(shapely.line_interpolate_point(lines[line], d + 0.5 * m))
    behind = shapely.get_coordinates(shapely.line_interpolate_point(lines[line], d - 0.5 * m))
    u = ahead - behind
    u /= np.maximum(np.hypot(u[:, 0], u[:, 1]), 1e-9)[:, None]
    normal = np.column_stack([-u[:, 1], u[:, 0]]) * side[:, None]
    long, deep = rng.uniform(9, 16, len(d)) * m, rng.uniform(7, 11, len(d)) * m
    centre = (ahead + behind) / 2 + normal * (9 * m + deep / 2 + rng.uniform(0, 5, len(d)) * m)[
        :, None
    ]
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], float) / 2
    ring = (
        centre[:, None]
        + corners[None, :, :1] * long[:, None, None] * u[:, None]
        + corners[None, :, 1:] * deep[:, None, None] * normal[:, None]
    )
    houses = shapely.polygons(ring)
    keep = shapely.within(houses, village) & (rng.random(len(houses)) < 0.85)
    return _no_overlaps(houses[keep])


def _no_overlaps(polygons: np.ndarray) -> np.ndarray:
    """``polygons`` without the later one of each intersecting pair."""
    left, right = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    keep = np.ones(len(polygons), bool)
    for a, b in zip(left, right, strict=True):
        if a < b and keep[a]:
            keep[b] = False
    return polygons[keep]


def _gardens(houses, village, m, rng):
    """A garden around each house (its Voronoi cell, at most ~25 m away), of a kind of GARDENS."""
    if not len(houses):
        return _no_geoms(), np.empty(0, int)
    centres = shapely.centroid(houses)
    cells = shapely.voronoi_polygons(shapely.multipoints(centres), extend_to=village.envelope)
    cells = shapely.get_parts(cells)
    cell, house = shapely.STRtree(centres).query(cells, "contains")
    cells, plots = cells[cell], shapely.buffer(houses[house], 25 * m)
    cells = shapely.intersection(shapely.intersection(cells, plots), village)
    cells = cells[~shapely.is_empty(cells)]
    kinds = rng.choice(len(GARDENS), len(cells), p=[v[1] for v in GARDENS.values()])
    return cells, kinds


def _water(goal, extent, size, m, rng):
    """A river across the scene (5 to 40 m wide) and lakes, of ``goal`` px² in all."""
    water, lakes = shapely.Polygon(), shapely.Polygon()
    if goal < 0.2 * HA * m**2:
        return water, lakes
    if rng.random() < 0.5:
        t = np.linspace(-1, 1, 400)
        heading = rng.uniform(0, np.pi)
        u, v = (
            np.array([np.cos(heading), np.sin(heading)]),
            np.array([-np.sin(heading), np.cos(heading)]),
        )
        freq = rng.uniform(1, 4, 3)
        bend = (
            rng.uniform(0.01, 0.05, 3)
            * size
            * np.sin(np.outer(t, freq) * np.pi + rng.uniform(0, 6, 3))
        ).sum(1)
        start = np.array([size / 2, size / 2]) + v * rng.uniform(-0.3, 0.3) * size
        course = start + np.outer(t * size, u) + np.outer(bend, v)
        line = shapely.intersection(shapely.linestrings(course), extent)
        width = np.clip(goal / max(line.length, 1), 5 * m, 40 * m)
        water = shapely.intersection(shapely.buffer(line, width / 2), extent)
    left = goal - water.area
    if left > 0.2 * HA * m**2:
        n = int(np.ceil(left / (30 * HA * m**2)))
        xmin, ymin, xmax, ymax = extent.bounds
        centres = rng.uniform((xmin, ymin), (xmax, ymax), (n, 2))
        lakes = _blobs(centres, left / n * rng.uniform(0.7, 1.3, n), rng, (1.0, 2.5), 0.35)
        lakes = shapely.intersection(shapely.union_all(lakes), extent)
    return water, lakes


def _woods(goal, parcels, owners, taken, extent, m, rng):
    """Woods of about ``goal`` px² off ``taken``: some whole parcels, the rest irregular blobs."""
    total = extent.area
    if goal < 0.002 * total:
        return shapely.Polygon()
    # whole parcels give woods the straight edges they have in a cadastre
    order = rng.permutation(len(parcels))
    order = order[~np.isin(order, owners)]
    whole = order[np.cumsum(shapely.area(parcels[order])) <= rng.uniform(0.2, 0.5) * goal]
    wood = shapely.difference(shapely.union_all(parcels[whole]), taken)
    taken = shapely.union(taken, wood)
    for _ in range(12):  # each round adds at most what is missing, so it never overshoots
        missing = goal - wood.area
        free = shapely.difference(extent, taken)
        if missing < 0.003 * total or free.area < 0.003 * total:
            break
        n = max(1, round(missing / (4 * HA * m**2)))
        areas = rng.lognormal(0, 0.7, n)
        centres = _points_in(free, n, rng)  # in free ground, so most of each blob counts
        blobs = _blobs(centres, areas * missing / areas.sum(), rng, (1.0, 2.5), 0.4)
        new = shapely.difference(shapely.intersection(shapely.union_all(blobs), extent), taken)
        wood, taken = shapely.union(wood, new), shapely.union(taken, new)
    return wood


def _cut_parcels(parcels, taken, m, size):
    """Parcels minus ``taken``, split into parts; parts too small or thin to farm come apart."""
    cut, hit = _local_difference(parcels, _split(taken))
    parts, source = _polygons(cut)
    small = shapely.area(parts) < min(0.1 * HA * m**2, 0.01 * size**2)
    thin = shapely.is_empty(shapely.buffer(parts, -min(4 * m, size / 32)))
    farmable = ~hit[source] | ~(small | thin)
    return parts[farmable], source[farmable], shapely.union_all(parts[~farmable])


def _split(geom, max_vertices: int = 256) -> np.ndarray:
    """``geom`` cut into pieces of at most about ``max_vertices`` vertices (a quadtree)."""
    pieces, todo = [], [geom]
    while todo:
        g = todo.pop()
        if shapely.get_num_coordinates(g) <= max_vertices:
            pieces.append(g)
            continue
        x0, y0, x1, y1 = g.bounds
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        quads = shapely.box([x0, xm, x0, xm], [y0, y0, ym, ym], [xm, x1, xm, x1], [ym, ym, y1, y1])
        quads = _same_dimension(shapely.intersection(g, quads, grid_size=GRID), 2)
        todo.extend(q for q in quads if not q.is_empty)
    return np.array([g for g in pieces if not g.is_empty], dtype=object)


def _local_difference(geoms: np.ndarray, pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``geoms`` minus the ``pieces`` it touches, and which of ``geoms`` touched any.

    An STR-tree finds the pieces, and each round subtracts one more piece from every geometry
    that has one left, so each difference stays small however large the pieces' union is.
    """
    out, hit = geoms.copy(), np.zeros(len(geoms), bool)
    if not len(pieces) or not len(geoms):
        return out, hit
    which, piece = shapely.STRtree(pieces).query(geoms, predicate="intersects")
    order = np.argsort(which, kind="stable")
    which, piece = which[order], piece[order]
    start = np.flatnonzero(np.r_[True, which[1:] != which[:-1]]) if len(which) else which
    rank = np.arange(len(which)) - np.repeat(start, np.diff(np.r_[start, len(which)]))
    for r in range(int(rank.max(initial=-1)) + 1):
        sel = rank == r
        left = shapely.difference(out[which[sel]], pieces[piece[sel]], grid_size=GRID)
        out[which[sel]] = _same_dimension(left, shapely.get_dimensions(geoms[which[sel]]))
    hit[which] = True
    return out, hit


def _pieces(kinds: list) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per part of each kind's geometry, with its index into COVER."""
    parts, kind = _polygons(np.array(kinds, dtype=object))
    keep = shapely.area(parts) > 0.5
    return parts[keep], kind[keep]


def _same_dimension(geoms: np.ndarray, dimension) -> np.ndarray:
    """``geoms`` without the parts of another dimension that snap rounding can leave behind."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = shapely.get_dimensions(parts) == np.broadcast_to(dimension, len(geoms))[index]
    out = np.array([shapely.GeometryCollection()] * len(geoms), dtype=object)
    if keep.any():
        owner, at = np.unique(index[keep], return_inverse=True)
        out[owner] = shapely.geometrycollections(parts[keep], indices=at)
    return out


def _polygons(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polygons in ``geoms``, snapped to the GRID (so they stay valid once moved to map
    coordinates), and the index of the geometry each came from."""
    parts, source = shapely.get_parts(shapely.set_precision(geoms, GRID), return_index=True)
    polygon = shapely.get_type_id(parts) == 3
    return parts[polygon], source[polygon]


def _clip_edges(edges, kinds, taken, lakes):
    """Field edges outside non-field land (lines along its outline stay); roads outside lakes."""
    road = kinds == list(EDGES).index("road")
    clipped = edges.copy()
    clipped[~road] = _local_difference(edges[~road], _split(shapely.buffer(taken, -1.0)))[0]
    clipped[road] = _local_difference(edges[road], _split(lakes))[0]
    parts, index = shapely.get_parts(clipped, return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 1.0)
    return parts[keep], kinds[index[keep]]


def _texture_field(rng: np.random.Generator, resolution: float) -> np.ndarray:
    """Random plane waves (direction, wavelength, phase) summed into a smooth texture."""
    n = 6
    angle = rng.uniform(0, 2 * math.pi, n)
    wavelength = rng.uniform(40, 400, n) / resolution
    return np.stack(
        [np.cos(angle) / wavelength, np.sin(angle) / wavelength, rng.uniform(0, 2 * math.pi, n)], 1
    )


def render(
    scene: Scene,
    window: Window,
    size: int,
    bands: int,
    resolution: float,
    texture: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Float reflectances (bands, h, w) on the 0..255 scale for one window of the scene."""
    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel grids, identity at (0, 0)
    h, w = int(window.height), int(window.width)
    grid = Affine.translation(window.col_off, window.row_off)
    box = shapely.box(window.col_off, window.row_off, window.col_off + w, window.row_off + h)
    yy, xx = np.mgrid[window.row_off : window.row_off + h, window.col_off : window.col_off + w]
    yy, xx = yy.astype(np.float32) + 0.5, xx.astype(np.float32) + 0.5

    hits = np.nonzero(shapely.intersects(scene.parcels, box))[0]
    ids = (
        rasterize(
            ((scene.parcels[i], i + 1) for i in hits),
            out_shape=(h, w),
            transform=grid,
            dtype="int32",
        )
        if len(hits)
        else np.zeros((h, w), np.int32)
    )
    known = ids > 0
    ids = np.where(known, ids - 1, 0)
    palette = np.array([c for c, _ in CROPS.values()], dtype=np.float32)[:, :bands]
    contrast = np.array([k for _, k in CROPS.values()], dtype=np.float32)
    crop = np.where(known, scene.crop[ids], 2)
    image = palette[crop].transpose(2, 0, 1) * np.where(known, scene.brightness[ids], 1.0)

    angle, period = scene.row_angle[ids], scene.row_period[ids]
    rows = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    image *= 1 + contrast[crop] * rows
    _paint_cover(image, scene, box, grid, xx, yy, resolution, seed)
    waves = np.sin(
        xx[..., None] * texture[:, 0] * 2 * np.pi
        + yy[..., None] * texture[:, 1] * 2 * np.pi
        + texture[:, 2]
    ).mean(-1)
    image *= 1 + 0.12 * waves

    for kind, (colour, width_m, _) in enumerate(EDGES.values()):
        sel = (scene.edge_kind == kind) & shapely.intersects(scene.edges, box)
        if colour is None or not sel.any():
            continue
        strips = shapely.buffer(scene.edges[sel], width_m / resolution / 2, cap_style="flat")
        _paint(
            image, rasterize(strips, out_shape=(h, w), transform=grid, dtype="uint8"), colour, bands
        )
    _paint_buildings(image, scene, box, grid, resolution)

    gradient = 1 + 0.15 * (xx / size - 0.5) - 0.10 * (yy / size - 0.5)
    image *= gradient
    noise = np.random.default_rng([seed, int(window.row_off), int(window.col_off)])
    image *= 1 + noise.normal(0, 0.025, image.shape).astype(np.float32)
    return image


def _paint_cover(image, scene, box, grid, xx, yy, resolution, seed) -> None:
    """Non-field land in its colours, with a two-scale texture of its own; village gardens."""
    hits = np.nonzero(shapely.intersects(scene.cover, box))[0]
    if not len(hits):
        return
    bands, h, w = image.shape
    kinds = rasterize(
        ((scene.cover[i], scene.cover_kind[i] + 1) for i in hits),
        out_shape=(h, w),
        transform=grid,
        dtype="uint8",
    )
    for code, (kind, (colour, contrast, (fine, coarse))) in enumerate(COVER.items(), start=1):
        where = kinds == code
        if not where.any():
            continue
        base = np.broadcast_to(np.array(colour[:bands], np.float32)[:, None], (bands, where.sum()))
        if kind == "village":
            base = _garden_colours(scene, box, grid, (h, w), where, base)
        key = seed * len(COVER) + code
        texture = _texture(xx[where], yy[where], fine / resolution, coarse / resolution, key)
        image[:, where] = base * (1 + contrast * 2.5 * texture)


def _garden_colours(scene, box, grid, shape, where, base):
    """Colours of the village pixels ``where``: their garden's, the village's own elsewhere."""
    hits = np.nonzero(shapely.intersects(scene.gardens, box))[0]
    if not len(hits):
        return base
    codes = rasterize(
        ((scene.gardens[i], scene.garden_kind[i] + 1) for i in hits),
        out_shape=shape,
        transform=grid,
        dtype="uint8",
    )[where]
    palette = np.array([base[:, 0]] + [c[: len(base)] for c, _ in GARDENS.values()], np.float32)
    return palette[codes].T


def _texture(x, y, fine: float, coarse: float, key: int) -> np.ndarray:
    """Three octaves of value noise on turned grids (no grid-aligned look), about -1..1."""
    octaves = ((fine, 0.55, 0.4), (fine / 2, 0.2, 1.1), (coarse, 0.25, 2.3))  # cell, weight, turn
    total = 0
    for n, (cell, weight, turn) in enumerate(octaves):
        c, s = math.cos(turn), math.sin(turn)
        total = total + weight * _value_noise(c * x - s * y, s * x + c * y, cell, key * 3 + n)
    return total


def _value_noise(x: np.ndarray, y: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth noise in -1..1 with features of ``cell`` pixels, the same in every window."""
    gx, gy = x / cell, y / cell
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    a, b = _lattice(ix, iy, key), _lattice(ix + 1, iy, key)
    c, d = _lattice(ix, iy + 1, key), _lattice(ix + 1, iy + 1, key)
    top, bottom = a + (b - a) * fx, c + (d - c) * fx
    return (top + (bottom - top) * fy) * 2 - 1


def _lattice(i: np.ndarray, j: np.ndarray, key: int) -> np.ndarray:
    """A uniform 0..1 value per integer lattice point and ``key`` (a splitmix64 hash)."""
    z = i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z ^= j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    z ^= np.uint64(key * 0x165667B19E3779F9 % 2**64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(2**24)


def _paint_buildings(image, scene, box, grid, resolution) -> None:
    """Shadows, then roofs, of the buildings near this window (one rasterize per layer)."""
    if not len(scene.buildings):
        return
    bands, h, w = image.shape
    near = np.nonzero(shapely.intersects(shapely.buffer(scene.buildings, 6 / resolution), box))[0]
    if not len(near):
        return
    shadows = shapely.affinity.translate(
        shapely.union_all(scene.buildings[near]), 2 / resolution, 2 / resolution
    )
    _paint(
        image, rasterize([shadows], out_shape=(h, w), transform=grid, dtype="uint8"), SHADOW, bands
    )
    roofs = rasterize(
        ((scene.buildings[i], scene.roof[i] + 1) for i in near),
        out_shape=(h, w),
        transform=grid,
        dtype="uint8",
    )
    for code, colour in enumerate(ROOFS, start=1):
        _paint(image, roofs == code, colour, bands)


def _paint(image: np.ndarray, where: np.ndarray, colour, bands: int) -> None:
    """Paint ``colour`` where ``where`` is set, keeping some of the underlying texture."""
    mask = where.astype(bool)
    if mask.any():
        keep = image[:, mask] / np.maximum(image[:, mask].mean(0), 1) * 0.15
        image[:, mask] = np.array(colour[:bands], np.float32)[:, None] * (0.85 + keep)


def _write_image(
    path, scene, size, bands, dtype, crs, transform, resolution, texture, seed, progress
):
    scale, top = (1.0, 255) if dtype == "uint8" else (40.0, 65535)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype=dtype,
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=WINDOW,
        blockysize=WINDOW,
        compress="deflate",
        predictor=2,
        BIGTIFF="IF_SAFER",
    )
    windows = chip_windows(size, size, WINDOW, WINDOW)
    with rasterio.open(path, "w", **profile) as dst:
        for done, window in enumerate(windows, start=1):
            window = window.intersection(Window(0, 0, size, size))
            pixels = render(scene, window, size, bands, resolution, texture, seed)
            dst.write(np.clip(pixels * scale, 0, top).round().astype(dtype), window=window)
            if progress:
                progress(done, len(windows))
        dst.descriptions = ("red", "green", "blue", "nir")[:bands]


def _to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel-coordinate geometries to map coordinates."""
    return shapely.transform(geoms, lambda xy: np.column_stack(transform @ (xy[:, 0], xy[:, 1])))


def _write_vectors(folder: Path, scene: Scene, crs: CRS, transform: Affine) -> None:
    """parcels.gpkg, landcover.gpkg (non-field land, by ``kind``) and buildings.gpkg."""
    parcels = _to_map(scene.parcels, transform)
    names = list(CROPS)
    gpd.GeoDataFrame(
        {
            "parcel_id": np.arange(1, len(parcels) + 1),
            "crop": [names[c] for c in scene.crop],
            "area_m2": shapely.area(parcels).round(1),
        },
        geometry=parcels,
        crs=crs,
    ).to_file(folder / "parcels.gpkg", layer="parcels", engine="pyogrio")
    cover = _to_map(scene.cover, transform) if len(scene.cover) else _no_geoms()
    kinds = np.array(list(COVER), dtype=object)
    gpd.GeoDataFrame(
        {"kind": kinds[scene.cover_kind], "area_m2": shapely.area(cover).round(1)},
        geometry=list(cover),
        crs=crs,
    ).to_file(folder / "landcover.gpkg", layer="landcover", engine="pyogrio")
    houses = _to_map(scene.buildings, transform) if len(scene.buildings) else []
    gpd.GeoDataFrame({"class": ["building"] * len(houses)}, geometry=list(houses), crs=crs).to_file(
        folder / "buildings.gpkg", layer="buildings", engine="pyogrio"
    )
