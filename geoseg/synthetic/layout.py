"""The vector layout of a synthetic scene: parcels from stretched Voronoi cells per zone, field
edges, farmsteads, and the land that is not parcels cut out of them."""

from __future__ import annotations

import logging
import math

import numpy as np
import shapely

from geoseg.synthetic.land import CROPS, EDGES, GARDENS, GRID, HA, ROOFS, Scene, no_geoms

logger = logging.getLogger(__name__)


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
    nothing = (shapely.Polygon(), shapely.Polygon(), no_geoms(), np.empty(0, int))
    if goal < 0.5 * HA * m**2:
        return (*nothing, no_geoms(), np.empty(0, int))
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
        return no_geoms()
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
        return no_geoms(), np.empty(0, int)
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
