"""Labels: GDAL on WKB and the GeoJSON path, the outline band and its cache, block-wise burning,
class fields."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.errors import LabelsError
from geoseg.labels import gdal_burn
from geoseg.labels import masks as labels_module
from geoseg.labels.burning import (
    burn_lines,
    burn_shapes,
    burnable_parts,
    pixel_diagonal,
    rasterize_parts,
    trimmed_to_window,
)
from geoseg.labels.masks import IGNORE, LabelSpec, Length, open_labels

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


def gdal_or_skip():
    """The direct GDAL rasterizer, or skip where rasterio's GDAL cannot be called directly."""
    gdal = gdal_burn.rasterizer()
    if gdal is None:
        pytest.skip("rasterio's GDAL library is not reachable here: rasterio burns")
    return gdal


def test_gdal_on_wkb_burns_what_rasterio_burns():
    """Polygons with holes, overlapping parts, buffered outlines and lines (all touched), on a
    north-up and a rotated grid, one geometry at a time and as one collection."""
    gdal = gdal_or_skip()
    rng = np.random.default_rng(13)
    polygons = random_polygons(rng, 40)
    bands = shapely.buffer(shapely.boundary(polygons), 0.75)
    lines = shapely.boundary(polygons[:10])
    rotated = rasterio.Affine.translation(500_000, 5_299_980) @ rasterio.Affine.rotation(20)
    rotated = rotated @ rasterio.Affine.scale(0.5, -0.5)
    for grid in (GRID, rotated):
        for geoms, touched in ((polygons, False), (bands, False), (lines, True)):
            parts = burnable_parts(geoms)
            wkbs = shapely.to_wkb(parts, output_dimension=2)
            expected = rasterize_parts(parts, grid, SHAPE, touched)
            assert expected.any()
            np.testing.assert_array_equal(gdal.rasterize(wkbs, grid, SHAPE, touched), expected)
            one = np.array([gdal_burn.collection_wkb(wkbs)], dtype=object)
            np.testing.assert_array_equal(gdal.rasterize(one, grid, SHAPE, touched), expected)


def straightforward_burn(geoms, codes, crs, grid, shape, width, classes) -> np.ndarray:
    """Masks as geoseg burned them first: rasterio on shapely geometries, one buffer per line;
    ``geoms`` is a GeoSeries, reprojected to ``crs``, whose multipolygons are parcels apart."""
    geoms, owner = shapely.get_parts(geoms.to_crs(crs).values, return_index=True)
    codes = codes[owner]
    is_line = np.isin(shapely.get_type_id(geoms), [1, 2, 5])
    lines_of = np.where(is_line, geoms, shapely.boundary(geoms))
    touches = width <= pixel_diagonal(grid)

    def fill(shapes, all_touched=False):
        shapes = [g for g in shapes if not g.is_empty]
        if not shapes:
            return np.zeros(shape, np.uint8)
        return rasterize(
            shapes, out_shape=shape, transform=grid, all_touched=all_touched, dtype="uint8"
        )

    def band(lines):
        return fill(shapely.buffer(lines, width / 2)) | (fill(lines, True) if touches else 0)

    out = [fill(geoms[(codes == k) & ~is_line]) | band(geoms[(codes == k) & is_line])
           for k in range(classes)]  # fmt: skip
    return np.stack([*out, band(lines_of)])


def hand_made_parcels():
    """Parcels on the pixel grid (their bands' edges through pixel centres), a 45 degree edge,
    a hole, a multipolygon, thin strips, a field larger than every window and lines."""
    x, y = 500_000, 5_300_000  # pixel corners every 0.5 m
    big = shapely.Polygon(
        [(x - 20, y + 15), (x + 95, y - 3), (x + 90, y - 75), (x - 10, y - 70)],
        holes=[[(x + 30, y - 30), (x + 50, y - 30), (x + 50, y - 40), (x + 30, y - 40)]],
    )
    parcels = [
        shapely.box(x + 5, y - 15, x + 15, y - 5),
        shapely.box(x + 15, y - 15, x + 27.5, y - 2),  # shares an edge with the first
        shapely.Polygon([(x + 40, y - 5), (x + 60, y - 5), (x + 40, y - 25)]),  # 45 degrees
        shapely.box(x + 60, y - 50, x + 78, y - 30) - shapely.box(x + 66, y - 44, x + 72, y - 36),
        shapely.multipolygons(shapely.box([x + 2, x + 8], [y - 58, y - 54], [x + 12, x + 20],
                                          [y - 48, y - 44])),  # overlapping parts
        shapely.box(x + 30, y - 56.25, x + 70, y - 55.75),  # thinner than the band
        big,
    ]  # fmt: skip
    lines = [
        shapely.LineString([(x - 5, y - 20), (x + 85, y - 20)]),  # along pixel centres' edges
        shapely.LineString([(x + 3, y - 3), (x + 33, y - 33), (x + 40, y - 10)]),
    ]
    return parcels + lines, np.array([0] * len(parcels) + [1] * len(lines))


@pytest.mark.parametrize(("width", "file_crs"), [("1.5", 32633), ("0.3", 32633), ("1.5", 32632)])
def test_cached_bands_and_gdal_burn_as_the_straightforward_burn(make_vector, width, file_crs):
    """Hand-made parcels, in the grid's CRS or another, in windows that cut them, burned in
    threads (the cache filling as they go) and again from the cache: as the first burn did."""
    parcels, codes = hand_made_parcels()
    stored = gpd.GeoSeries(parcels, crs="EPSG:32633").to_crs(file_crs)
    path = make_vector(stored.values, crs=stored.crs, kind=np.array(["field", "track"])[codes])
    spec = LabelSpec(str(path), class_field="kind", boundary_width=Length.parse(width))
    burned = open_labels(spec)
    crs = rasterio.crs.CRS.from_epsg(32633)
    windows = [(row, col) for row in range(0, 160, 40) for col in range(0, 200, 48)]
    transforms = [window_transform(Window(c, r, 48, 40), GRID) for r, c in windows]

    def burn(transform):
        return burned.burn(crs, transform, (40, 48), 0.5)

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(burn, transforms))
    assert burned._in_crs(crs).bands  # the big field and the parcels cut by windows
    for transform, first in zip(transforms, threaded):
        expected = straightforward_burn(stored, codes, crs, transform, (40, 48), float(width), 2)
        np.testing.assert_array_equal(first, expected)
        np.testing.assert_array_equal(burn(transform), expected)
    assert all(np.stack(threaded)[:, band].any() for band in range(3))


def test_large_polygons_trimmed_to_the_window_burn_the_same():
    """Polygons of many vertices on the pixel grid, a frame round the whole grid, a wavy field
    and their buffered outlines, in windows that cut them: trimmed, the same pixels."""
    x, y = 500_000, 5_300_000
    frame = shapely.box(x - 30, y - 90, x + 110, y + 30) - shapely.box(x - 5, y - 65, x + 85, y + 5)
    t = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
    radius = 25 + 4 * np.sin(9 * t) + np.random.default_rng(2).normal(0, 0.05, t.size)
    wavy = shapely.Polygon(
        np.column_stack([x + 45 + radius * np.cos(t), y - 30 + radius * np.sin(t)])
    )
    polygons = shapely.segmentize(np.array([
        frame,
        shapely.Polygon([(x + 2, y - 2), (x + 60, y - 2), (x + 60, y - 20), (x + 20, y - 20),
                         (x + 20, y - 50), (x + 2, y - 50)]),  # an L on the pixel grid
        shapely.Polygon([(x + 10, y - 10), (x + 70, y - 10), (x + 10, y - 55)]),  # 36.87 degrees
        wavy,
    ]), 0.25)  # fmt: skip
    bands = shapely.buffer(shapely.boundary(polygons), 0.75)
    parts = burnable_parts(np.concatenate([polygons, bands]))
    trimmed_vertices = 0
    for row in range(-4, 120, 24):
        for col in range(-4, 160, 28):
            grid = window_transform(Window(col, row, 28, 24), GRID)
            trimmed = trimmed_to_window(parts, grid, (24, 28))
            trimmed_vertices += shapely.get_num_coordinates(trimmed).sum()
            expected = rasterize_parts(parts, grid, (24, 28))
            np.testing.assert_array_equal(burn_shapes(trimmed, grid, (24, 28)), expected)
            np.testing.assert_array_equal(rasterize_parts(trimmed, grid, (24, 28)), expected)
    windows = len(range(-4, 120, 24)) * len(range(-4, 160, 28))
    assert trimmed_vertices < 0.2 * windows * shapely.get_num_coordinates(parts).sum()


def test_large_polygons_wholly_beyond_a_window_side_are_dropped_without_error():
    """A many-vertex polygon wholly west of the window (its ring loses every vertex), alone
    and beside one that crosses the window: the same pixels as burning them untrimmed."""
    x, y = 500_000, 5_300_000
    far_west = shapely.segmentize(shapely.box(x - 80, y - 20, x - 40, y - 2), 0.25)
    crossing = shapely.segmentize(shapely.box(x - 10, y - 12, x + 6, y - 3), 0.25)
    grid = window_transform(Window(0, 0, 28, 24), GRID)
    for parts in (np.array([far_west]), np.array([far_west, crossing])):
        trimmed = trimmed_to_window(parts, grid, (24, 28))
        expected = rasterize_parts(parts, grid, (24, 28))
        np.testing.assert_array_equal(burn_shapes(trimmed, grid, (24, 28)), expected)
    assert len(trimmed_to_window(np.array([far_west]), grid, (24, 28))) == 0


def test_labels_burn_the_same_through_rasterio(make_vector, monkeypatch):
    """Without the direct GDAL call (GEOSEG_RASTERIZE=rasterio) the masks are the same."""
    parcels, codes = hand_made_parcels()
    spec = LabelSpec(str(make_vector(parcels)), boundary_width=Length.parse("1px"))
    fast = open_labels(spec).burn(rasterio.crs.CRS.from_epsg(32633), GRID, (160, 200), 0.5)
    monkeypatch.setattr(gdal_burn, "rasterizer", lambda: None)
    labels_module._load_labels.cache_clear()
    slow = open_labels(spec).burn(rasterio.crs.CRS.from_epsg(32633), GRID, (160, 200), 0.5)
    np.testing.assert_array_equal(fast, slow)
    assert fast[0].any() and fast[1].any()


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
    with pytest.raises(LabelsError, match="'parcel_id' holds 300 distinct values.*`classes`"):
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


def test_lines_among_parcel_polygons_burn_into_the_boundary_only(make_vector):
    """Fences and ditches drawn as lines beside parcel polygons: the polygons stay the field
    extent (the recipe engages), the lines go into the boundary, never into the extent."""
    field = shapely.box(500_005, 5_299_985, 500_015, 5_299_995)  # rows and columns 10..29
    fence = shapely.LineString([(500_025, 5_299_999), (500_025, 5_299_970)])  # column 50
    across = shapely.LineString([(500_005, 5_299_990), (500_015, 5_299_990)])  # row 20
    path = make_vector([field, fence, across])
    spec = LabelSpec(str(path), boundary_width=Length.parse("1px"), distance=True)
    labels = open_labels(spec)
    assert labels.targets["labels"]["role"] == "extent"
    extent, boundary, distance = labels.burn(labels._crs, GRID, (60, 60), 0.5)
    assert extent.sum() == 400 and not extent[:, 40:].any()  # the field alone
    assert boundary[2:60, 49:51].any(axis=1).all()
    assert boundary[19:21, 12:28].any(axis=0).all()  # the line across the field too
    assert not distance[:, 40:].any()  # lines are never parcels
    alone = open_labels(LabelSpec(str(make_vector([field], name="alone.gpkg")), distance=True))
    np.testing.assert_array_equal(alone.burn(alone._crs, GRID, (60, 60), 0.5)[1], distance)
    no_boundary = open_labels(LabelSpec(str(path)))  # the lines are then left out
    assert no_boundary.targets[no_boundary.classes[0]]["role"] == "extent"
    np.testing.assert_array_equal(
        no_boundary.burn(no_boundary._crs, GRID, (60, 60), 0.5)[0], extent
    )
    # lines only: no extent (a layer of roads or ditches)
    lines = open_labels(LabelSpec(str(make_vector([fence], name="lines.gpkg"))))
    assert [t["role"] for t in lines.targets.values()] == [None]
    assert lines.burn(lines._crs, GRID, (60, 60), 0.5)[0, 2:60, 49:51].any(axis=1).all()


def test_tile_says_which_delineation_the_labels_give(make_raster, make_vector, tmp_path):
    image = make_raster(width=128, height=128)
    fields = [
        shapely.box(500_002, 5_299_970, 500_030, 5_299_998),
        shapely.box(500_032, 5_299_940, 500_060, 5_299_998),
    ]
    fence = shapely.LineString([(500_031, 5_299_999), (500_031, 5_299_936)])
    mixed = make_vector([*fields, fence])
    result = run("tile", image, "--labels", mixed, "--size", 64, "--boundary-width", "1px",
                 "--distance", "--out", tmp_path / "a")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parcels by a watershed of the field extent (extent, boundary, distance)" in (
        result.output
    )
    crops = make_vector([*fields], name="crops.gpkg", crop=["wheat", "maize"])
    result = run("tile", image, "--labels", crops, "--class-field", "crop", "--size", 64,
                 "--boundary-width", "1px", "--out", tmp_path / "b")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parcels by closing the boundary alone" in result.output


def test_sparse_labels_ignore_what_lies_beyond_the_reach_of_every_feature(make_vector):
    """A drawn field and the ring around it are known; the undrawn land beyond is not background."""
    field = shapely.box(500_010, 5_299_960, 500_030, 5_299_980)  # 40 x 40 px on GRID
    spec = LabelSpec(str(make_vector([field])), boundary_width=Length.parse("1px"))
    reach = Length.parse("3px")
    sparse = LabelSpec(spec.path, boundary_width=spec.boundary_width, sparse_reach=reach)
    crs = rasterio.crs.CRS.from_epsg(32633)
    dense, masks = (open_labels(s).burn(crs, GRID, SHAPE, 0.5) for s in (spec, sparse))
    near = burn_shapes([field.buffer(1.5)], GRID, SHAPE) == 1
    np.testing.assert_array_equal(masks[:, near], dense[:, near])  # the field and its ring
    assert (masks[:, ~near] == IGNORE).all() and (dense[:, ~near] == 0).all()
    assert (masks[0, near] == 0).any()  # some known background around the field
    nothing = shapely.box(499_000, 5_299_000, 499_010, 5_299_010)  # far from the window
    far = LabelSpec(str(make_vector([nothing], name="far.gpkg")), sparse_reach=reach)
    empty = open_labels(far)
    assert (empty.burn(crs, GRID, SHAPE, 0.5) == IGNORE).all()


def test_sparse_labels_need_vector_labels(make_raster, tmp_path):
    image = make_raster(width=64, height=64)
    mask = make_raster(width=64, height=64, count=1)
    result = run("tile", image, "--labels", mask, "--sparse-labels", "3px", "--size", "64",
                 "--out", tmp_path / "c")  # fmt: skip
    assert_one_line_error(result, "--sparse-labels applies to vector labels")
