"""Labels: the fast GeoJSON path, the outline band, block-wise burning, class fields."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import LabelsError
from geoseg.labels import IGNORE, LabelSpec, Length, burn_lines, burn_shapes, open_labels

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


def test_float_class_field_is_refused_with_its_name_and_type(make_raster, make_vector, tmp_path):
    boxes = [shapely.box(500_000 + i, 5_299_950, 500_001 + i, 5_299_951) for i in range(4)]
    labels = make_vector(boxes, area_m2=[12.5, 3.25, 40.0, 7.1])
    with pytest.raises(LabelsError, match="field 'area_m2' holds float64 values: a class field"):
        open_labels(LabelSpec(str(labels), class_field="area_m2"))
    image = make_raster(width=256, height=256)
    result = run(
        "tile", image, "--labels", labels, "--class-field", "area_m2", "--out", tmp_path / "c"
    )
    assert_one_line_error(result, "'area_m2'", "float64", "text or integers")


def test_whole_number_floats_are_integer_classes(make_vector):
    """Shapefiles often store integer codes as floats (3.0): those are read as "3"."""
    boxes = [shapely.box(500_000 + i, 5_299_950, 500_001 + i, 5_299_951) for i in range(4)]
    labels = make_vector(boxes, name="codes.shp", code=[3.0, 10.0, 3.0, np.nan])
    burned = open_labels(LabelSpec(str(labels), class_field="code"))
    assert burned.classes == ["3", "10"]
    chosen = open_labels(LabelSpec(str(labels), class_field="code", classes=("10",)))
    assert chosen.classes == ["10"]


def test_a_class_field_with_more_than_255_values_is_refused(make_vector):
    boxes = [shapely.box(500_000 + i, 5_299_950, 500_001 + i, 5_299_951) for i in range(300)]
    labels = make_vector(boxes, parcel_id=list(range(300)))
    with pytest.raises(LabelsError, match="'parcel_id' holds 300 distinct values.*--classes"):
        open_labels(LabelSpec(str(labels), class_field="parcel_id"))
    some = open_labels(LabelSpec(str(labels), class_field="parcel_id", classes=("7", "250")))
    assert some.classes == ["7", "250"]


def test_label_raster_in_another_crs_burns_the_same_in_blocks_and_at_once(make_raster):
    """Label rasters are read window by window: a window burns like its part of the whole."""
    codes = np.zeros((1, 80, 90), dtype="uint8")
    codes[0, 10:50, 20:70] = 1
    codes[0, 55:75, 5:40] = 2
    utm32 = rasterio.Affine(0.6, 0, 900_000, 0, -0.6, 5_310_000)  # EPSG:32632
    labels = make_raster(
        width=90, height=80, count=1, data=codes, crs="EPSG:32632", transform=utm32, nodata=0
    )
    burned = open_labels(LabelSpec(str(labels), nodata=None))
    assert burned.classes == ["class_1", "class_2"] and burned.nodata is None
    crs = rasterio.crs.CRS.from_epsg(32633)
    from rasterio.warp import transform as warp

    (x,), (y,) = warp("EPSG:32632", crs, [900_000], [5_310_000])
    grid = rasterio.Affine(0.5, 0, x - 10, 0, -0.5, y + 10)
    whole = burned.burn(crs, grid, (140, 150), 0.5)
    assert (whole == 1).any() and (whole == IGNORE).any() and (whole == 0).any()
    for row, col in [(0, 0), (30, 47), (70, 100)]:
        window = Window(col, row, 50, 40)
        part = burned.burn(crs, window_transform(window, grid), (40, 50), 0.5)
        np.testing.assert_array_equal(part, whole[:, row : row + 40, col : col + 50])


def exact_distance_band(polygons, grid, shape):
    """The distance target computed by brute force with GEOS: per polygon (inside the grid)
    its pixel centres' distance to its outline over their largest, the larger where two meet."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    xs, ys = grid @ (cols + 0.5, rows + 0.5)
    points = shapely.points(xs, ys)
    value = np.zeros(shape)
    for polygon in polygons:
        inside = shapely.contains_xy(polygon, xs, ys)
        d = shapely.distance(points[inside], polygon.boundary)
        value[inside] = np.maximum(value[inside], d / d.max())
    return np.rint(value * 254)


def test_distance_of_a_square_parcel(make_vector):
    """A 20 px square: 254 at its four centre pixels, 13 (0.5 / 9.5) on its outline, 0 outside."""
    square = shapely.box(500_005, 5_299_985, 500_015, 5_299_995)  # rows and columns 10..29
    labels = open_labels(LabelSpec(str(make_vector([square])), distance=True))
    assert labels.classes == ["labels", "distance"]
    extent, distance = labels.burn(labels._crs, GRID, (40, 40), 0.5)
    inner = distance[10:30, 10:30]
    assert (inner[9:11, 9:11] == 254).all() and (inner == 254).sum() == 4
    assert (inner[0] == 13).all() and (inner[:, -1] == 13).all() and inner.min() == 13
    assert not distance[extent == 0].any() and (distance[extent == 1] > 0).all()
    steps = np.diff(distance[20, 10:20].astype(int))
    assert (steps > 0).all() and set(steps) <= {26, 27}  # 1 px = 254 / 9.5 levels


def test_distance_is_exact_and_the_same_in_any_window(make_vector):
    """Overlapping parcels with holes and many vertices (pruned per tile) against GEOS, and
    every window of the grid burns the same values as the whole."""
    rng = np.random.default_rng(11)
    centres = rng.uniform([500_020, 5_299_960], [500_060, 5_299_980], (6, 2))
    blobs = shapely.buffer(shapely.points(centres), rng.uniform(4, 12, 6), quad_segs=16)
    holes = shapely.buffer(shapely.points(centres + 1.5), 1.2)
    parcels = list(shapely.difference(blobs, holes)) + [
        shapely.box(500_002, 5_299_942, 500_030, 5_299_990),  # overlaps some blobs
        shapely.Polygon([(500_040, 5_299_945), (500_075, 5_299_950), (500_044, 5_299_941)]),
        shapely.Point(500_045, 5_299_970).buffer(24, quad_segs=40),  # big: pruned per tile
    ]
    labels = open_labels(LabelSpec(str(make_vector(parcels)), distance=True))
    whole = labels.burn(labels._crs, GRID, SHAPE, 0.5, grid=GRID)[-1]
    expected = exact_distance_band(parcels, GRID, SHAPE)
    assert np.abs(whole.astype(int) - expected).max() <= 1  # ties of rounding only
    assert (whole == expected).mean() > 0.999
    fresh = open_labels(LabelSpec(str(make_vector(parcels, name="again.gpkg")), distance=True))
    for burned, (row, col) in [(labels, (0, 0)), (labels, (37, 53)), (fresh, (64, 96))]:
        window = Window(col, row, 64, 56)
        transform = window_transform(window, GRID)
        alone = burned.burn(burned._crs, transform, (56, 64), 0.5, grid=GRID)[-1]
        np.testing.assert_array_equal(alone, whole[row : row + 56, col : col + 64])


def test_distance_targets_and_roles(make_vector):
    boxes = [shapely.box(500_000 + 3 * i, 5_299_950, 500_002 + 3 * i, 5_299_952) for i in range(3)]
    path = make_vector(boxes, crop=["wheat", "maize", "wheat"])
    one = open_labels(LabelSpec(str(path), boundary_width=Length.parse("1px"), distance=True))
    assert one.classes == ["labels", "boundary", "distance"]
    assert one.targets == {
        "labels": {"kind": "class", "role": "extent"},
        "boundary": {"kind": "class", "role": "boundary"},
        "distance": {"kind": "regression", "role": "distance"},
    }
    # several classes: every polygon is a parcel for the distance, no class is the extent
    crops = open_labels(LabelSpec(str(path), class_field="crop", distance=True))
    assert [t["role"] for t in crops.targets.values()] == [None, None, "distance"]
    band = crops.burn(crops._crs, GRID, SHAPE, 0.5)[-1]
    assert band[96:100, 0:4].max() == 254 and band[96:100, 6:10].max() == 254


def test_distance_needs_parcel_polygons(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    lines = make_vector([shapely.LineString([(500_001, 5_299_999), (500_060, 5_299_950)])])
    with pytest.raises(LabelsError, match="lines only"):
        open_labels(LabelSpec(str(lines), distance=True))
    result = run("tile", image, "--labels", lines, "--distance", "--out", tmp_path / "a")
    assert_one_line_error(result, "lines only", "--distance", "polygons")
    codes = np.zeros((1, 256, 256), dtype="uint8")
    codes[0, 10:50, 10:50] = 1
    mask = make_raster(width=256, height=256, count=1, data=codes, name="mask.tif")
    result = run("tile", image, "--labels", mask, "--distance", "--out", tmp_path / "b")
    assert_one_line_error(result, "--distance", "label raster")
    result = run("tile", image, "--distance", "--out", tmp_path / "c")
    assert_one_line_error(result, "--distance", "need --labels")
