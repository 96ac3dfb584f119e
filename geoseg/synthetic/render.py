"""Painting a synthetic scene's layout into pixels, window by window: crop colours, textures
and rows, field edges, land cover, gardens and buildings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.synthetic.land import COVER, CROPS, EDGES, GARDENS, ROOFS, SHADOW, Scene


def texture_field(rng: np.random.Generator, resolution: float) -> np.ndarray:
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
