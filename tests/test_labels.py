"""Burning vector labels: the fast GeoJSON path, the outline band, and block-wise burning."""

from __future__ import annotations

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.labels import LabelSpec, Length, burn_lines, burn_shapes, open_labels

GRID = rasterio.Affine(0.5, 0, 500_000, 0, -0.5, 5_300_000)
SHAPE = (120, 160)


def random_polygons(rng, n):
    """Polygons with holes, multipolygons and concave shapes inside the grid."""
    centres = rng.uniform([500_005, 5_299_945], [500_075, 5_299_995], (n, 2))
    blobs = shapely.buffer(shapely.points(centres), rng.uniform(1, 6, n), quad_segs=3)
    holes = shapely.buffer(shapely.points(centres), 0.8)
    shapes = shapely.difference(blobs, holes)
    moved = shapely.transform(shapes[1::2], lambda xy: xy + [30.0, -17.0])
    pairs = shapely.union(shapes[:-1:2], moved)
    return np.concatenate([shapes, pairs])


def test_burn_shapes_equals_rasterize_of_shapely_geometries():
    rng = np.random.default_rng(3)
    polygons = random_polygons(rng, 30)
    assert {g.geom_type for g in polygons} >= {"Polygon", "MultiPolygon"}
    expected = rasterize(polygons, out_shape=SHAPE, transform=GRID, dtype="uint8")
    np.testing.assert_array_equal(burn_shapes(polygons, GRID, SHAPE), expected)

    lines = np.array(
        [
            shapely.LineString(rng.uniform([500_000, 5_299_940], [500_080, 5_300_000], (5, 2))),
            shapely.MultiLineString([[(500_001, 5_299_999), (500_060, 5_299_950)]] * 2),
            shapely.LinearRing([(500_010, 5_299_990), (500_030, 5_299_990), (500_020, 5_299_970)]),
        ]
    )
    expected = rasterize(lines, out_shape=SHAPE, transform=GRID, all_touched=True, dtype="uint8")
    np.testing.assert_array_equal(burn_shapes(lines, GRID, SHAPE, all_touched=True), expected)
    assert not burn_shapes(np.array([shapely.Polygon()]), GRID, SHAPE).any()


def test_outline_band_contains_every_touched_pixel():
    """Wider than a pixel's diagonal, the band alone is the band plus the touched pixels."""
    rng = np.random.default_rng(5)
    outlines = shapely.boundary(random_polygons(rng, 20))
    touched = rasterize(outlines, out_shape=SHAPE, transform=GRID, all_touched=True, dtype="uint8")
    for width in (0.75, 1.5):  # 1.06 and 2.12 times the pixel diagonal of 0.71
        band = rasterize(
            shapely.buffer(outlines, width / 2), out_shape=SHAPE, transform=GRID, dtype="uint8"
        )
        np.testing.assert_array_equal(burn_lines(outlines, GRID, SHAPE, width), band | touched)
    thin = burn_lines(outlines, GRID, SHAPE, 0.3)  # the touched pixels are needed here
    np.testing.assert_array_equal(thin >= touched, True)


def test_a_block_burned_at_once_equals_its_chips_burned_alone(make_raster, make_vector):
    rng = np.random.default_rng(7)
    image = make_raster(width=160, height=120)
    labels = make_vector(list(random_polygons(rng, 40)))
    burned = open_labels(LabelSpec(str(labels), boundary_width=Length.parse("1.5")))
    with rasterio.open(image) as src:
        block = burned.burn(src.crs, src.transform, (src.height, src.width), 0.5)
        for row, col in [(0, 0), (37, 53), (64, 96)]:
            window = Window(col, row, 64, 56)
            alone = burned.burn(src.crs, window_transform(window, src.transform), (56, 64), 0.5)
            np.testing.assert_array_equal(alone, block[:, row : row + 56, col : col + 64])
    assert block[0].any() and block[1].any()
