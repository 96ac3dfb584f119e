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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.windows import Window

from geoseg.errors import ParameterError
from geoseg.io.outputs import check_output, staged_directory
from geoseg.io.raster import chip_windows
from geoseg.synthetic.land import COVER, CROPS, EDGES, Scene, no_geoms
from geoseg.synthetic.layout import layout
from geoseg.synthetic.render import render, texture_field

WINDOW = 512
BAND_NAMES = ("red", "green", "blue", "nir")
NON_FIELD = 0.2  # default share of the scene that is not parcels


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
    band_order: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic scene to ``out``: image.tif, parcels.gpkg, landcover.gpkg, buildings.gpkg.

    ``non_field`` is the share of the scene (0 to 0.9) given to land that is not parcels:
    roads and verges, farmyards, villages, water and woods. 0 gives an all-field scene.
    ``band_order`` writes the bands in another order (``blue,green,red`` as Sentinel-2's B2,
    B3, B4), e.g. to pretrain a model for imagery in that order; it sets the band count.
    """
    order = _band_order(band_order, bands)
    if size < 64:
        raise ParameterError(f"`size` must be at least 64, got {size}")
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
    texture = texture_field(rng, resolution)
    with staged_directory(out, overwrite) as staging:
        _write_image(
            staging / "image.tif",
            scene,
            size,
            order,
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


def _band_order(order: str | Sequence[str] | None, bands: int) -> tuple[str, ...]:
    """The bands to write, in order: red, green, blue (and nir) unless ``order`` says."""
    if order is None:
        if bands not in (3, 4):
            raise ParameterError(f"`bands` must be 3 or 4, got {bands}")
        return BAND_NAMES[:bands]
    names = tuple(n.strip() for n in (order.split(",") if isinstance(order, str) else order))
    if sorted(names) not in (sorted(BAND_NAMES[:3]), sorted(BAND_NAMES)):
        raise ParameterError(
            f"`band_order` must name red, green and blue (and nir) once each, got {','.join(names)}"
        )
    return names


def _write_image(
    path, scene, size, order, dtype, crs, transform, resolution, texture, seed, progress
):
    scale, top = (1.0, 255) if dtype == "uint8" else (40.0, 65535)
    bands = len(order)
    picked = [BAND_NAMES.index(name) for name in order]
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
            pixels = render(scene, window, size, bands, resolution, texture, seed)[picked]
            dst.write(np.clip(pixels * scale, 0, top).round().astype(dtype), window=window)
            if progress:
                progress(done, len(windows))
        dst.descriptions = order


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
    cover = _to_map(scene.cover, transform) if len(scene.cover) else no_geoms()
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
