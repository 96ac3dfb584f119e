"""Synthetic cadastre scenes: farmland seen from above, with its parcels as ground truth.

Parcels come from a Voronoi tessellation drawn per zone in a rotated, stretched frame, so fields
vary in size, shape and orientation. Each parcel has a crop with its own colour, texture and
row direction; field edges are hedges, tracks, roads or not visible at all; farmsteads add
buildings. The image is rendered and written window by window, so memory does not depend on
the scene size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
from geoseg.outputs import check_output, staged_directory
from geoseg.raster import chip_windows

WINDOW = 512

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


@dataclass
class SynthSummary:
    """What ``synth`` wrote."""

    out: Path
    size: int
    parcels: int
    buildings: int
    edges: dict[str, int]

    def describe(self) -> str:
        """One line for a terminal."""
        edges = ", ".join(f"{n} {k}" for k, n in self.edges.items())
        return (
            f"wrote a {self.size}x{self.size} scene to {self.out}: {self.parcels} parcels, "
            f"{self.buildings} buildings, field edges: {edges}"
        )


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
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic scene to ``out``: image.tif, parcels.gpkg and buildings.gpkg."""
    if size < 64:
        raise ParameterError(f"--size must be at least 64, got {size}")
    if bands not in (3, 4):
        raise ParameterError(f"--bands must be 3 or 4, got {bands}")
    if dtype not in ("uint8", "uint16"):
        raise ParameterError(f"--dtype must be uint8 or uint16, got {dtype}")
    if resolution <= 0:
        raise ParameterError(f"--resolution must be positive, got {resolution}")
    try:
        crs = CRS.from_user_input(crs)
    except CRSError:
        raise ParameterError(f"unknown CRS {crs!r}") from None
    check_output(out, overwrite)

    rng = np.random.default_rng(seed)
    scene = layout(size, resolution, rng, with_buildings=buildings)
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
    return SynthSummary(
        Path(out),
        size,
        len(scene.parcels),
        len(scene.buildings),
        {k: int((scene.edge_kind == i).sum()) for i, k in enumerate(kinds)},
    )


def layout(
    size: int, resolution: float, rng: np.random.Generator, with_buildings: bool = True
) -> Scene:
    """Draw zones, parcels, field edges and buildings for a ``size`` x ``size`` pixel scene."""
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
    houses, roofs = (
        _farmsteads(parcels, np.array(angle), resolution, rng) if with_buildings else ([], [])
    )
    return Scene(
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
    """A few clusters of rotated rectangular buildings, each inside one parcel."""
    houses, roofs = [], []
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
    return houses, roofs


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
    if len(scene.buildings):
        sel = np.nonzero(shapely.intersects(shapely.buffer(scene.buildings, 6 / resolution), box))[
            0
        ]
        for i in sel:
            shadow = shapely.affinity.translate(scene.buildings[i], 2 / resolution, 2 / resolution)
            _paint(
                image,
                rasterize([shadow], out_shape=(h, w), transform=grid, dtype="uint8"),
                SHADOW,
                bands,
            )
        for i in sel:
            roof = rasterize([scene.buildings[i]], out_shape=(h, w), transform=grid, dtype="uint8")
            _paint(image, roof, ROOFS[scene.roof[i]], bands)

    gradient = 1 + 0.15 * (xx / size - 0.5) - 0.10 * (yy / size - 0.5)
    image *= gradient
    noise = np.random.default_rng([seed, int(window.row_off), int(window.col_off)])
    image *= 1 + noise.normal(0, 0.025, image.shape).astype(np.float32)
    return image


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
    houses = _to_map(scene.buildings, transform) if len(scene.buildings) else []
    gpd.GeoDataFrame({"class": ["building"] * len(houses)}, geometry=list(houses), crs=crs).to_file(
        folder / "buildings.gpkg", layer="buildings", engine="pyogrio"
    )
