"""geoseg vectorize: exact regions across block borders, parcels, simplification, bad input."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from scipy import ndimage

from geoseg.vectorizing import vectorize

PIXEL_AREA = 0.25  # make_raster's 0.5 m pixels


def hand_made_mask() -> np.ndarray:
    """0/255 mask (120 x 150) with regions crossing 32 px blocks, holes and diagonal touches."""
    mask = np.zeros((120, 150), np.uint8)
    mask[20:50, 20:50] = 255  # a square ring across the borders at 32 ...
    mask[28:42, 28:42] = 0  # ... with its hole on the block corner
    mask[60:62, 5:140] = 255  # a long bar over four blocks
    mask[62:90, 90:92] = 255  # ... with a leg down
    mask[95:100, 60:64] = 255  # two squares touching only at a corner, across a border
    mask[100:105, 64:68] = 255
    mask[0:3, 0:3] = 255  # on the raster's corner
    mask[110:120, 140:150] = 255
    mask[30:34, 100:104] = 255  # a small square inside one block
    mask[31:33, 101:103] = 0  # with a hole
    for i in range(10):  # a staircase of diagonal touches, one region per step
        mask[5 + i, 60 + i] = 255
    return mask


@pytest.fixture
def mask_raster(make_raster):
    def factory(mask, name="building", tags=None, **options):
        path = make_raster(width=mask.shape[1], height=mask.shape[0], count=1, data=mask[None])
        with rasterio.open(path, "r+") as dst:
            dst.set_band_description(1, name)
            dst.update_tags(**(tags or {}))
        return path

    return factory


def components(mask):
    labels, n = ndimage.label(mask > 0)  # 4-connected
    return n, sorted(np.bincount(labels.ravel())[1:].tolist())


@pytest.mark.parametrize("block_size", [32, 64, 4096])
def test_exact_regions_across_block_borders(block_size, mask_raster, tmp_path):
    mask = hand_made_mask()
    path = mask_raster(mask)
    summary = vectorize(path, tmp_path / "v.gpkg", block_size=block_size)
    regions = gpd.read_file(tmp_path / "v.gpkg", layer="regions")
    count, sizes = components(mask)
    assert len(regions) == summary.polygons == count
    assert sorted(np.rint(regions.area / PIXEL_AREA).astype(int).tolist()) == sizes
    assert sorted(regions.pixels.tolist()) == sizes
    assert regions.is_valid.all() and (regions.geom_type == "Polygon").all()
    assert sorted(shapely.get_num_interior_rings(regions.geometry.values).tolist())[-2:] == [1, 1]
    assert (regions["class"] == "building").all()
    np.testing.assert_allclose(regions.mean_probability, 1.0)
    with rasterio.open(path) as src:
        assert regions.crs == src.crs
        truth = np.array(
            [
                shapely.geometry.shape(g)
                for g, _ in rasterio.features.shapes(mask, mask=mask > 0, transform=src.transform)
            ]
        )
    assert shapely.equals(regions.geometry.to_numpy()[:, None], truth[None, :]).any(axis=1).all()


def test_processes_give_the_threads_polygons_in_an_indexed_layer(
    mask_raster, tmp_path, monkeypatch
):
    import pyogrio

    import geoseg.vectorizing

    path = mask_raster(hand_made_mask())
    vectorize(path, tmp_path / "threads.gpkg", block_size=32)
    monkeypatch.setattr(geoseg.vectorizing, "PROCESS_PIXELS", 0)  # as for a large raster
    vectorize(path, tmp_path / "processes.gpkg", block_size=32, workers=2)
    threads, processes = (
        gpd.read_file(tmp_path / f"{name}.gpkg") for name in ("threads", "processes")
    )
    assert len(processes) == len(threads) == components(hand_made_mask())[0]
    pairs = shapely.equals(threads.geometry.to_numpy()[:, None], processes.geometry.to_numpy())
    assert pairs.any(axis=0).all() and pairs.any(axis=1).all()
    info = pyogrio.read_info(tmp_path / "processes.gpkg", layer="regions")
    assert info["capabilities"]["fast_spatial_filter"]  # the layer has its R-tree


def test_geopackages_keep_their_index_once_tensorflow_is_loaded(tmp_path):
    """TensorFlow's SQLite lacks the R-tree module; geoseg loads GDAL's before it."""
    code = (
        "import sys, geoseg, tensorflow, pyogrio, numpy as np, shapely\n"
        "from geoseg.gpkg import LayerWriter\n"
        "with LayerWriter(sys.argv[1], 'regions', 'EPSG:32633', {'area': 'float64'}) as w:\n"
        "    w.write(np.array([shapely.box(0, 0, 1, 1)]), area=np.array([1.0]))\n"
        "print(pyogrio.read_info(sys.argv[1])['capabilities']['fast_spatial_filter'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.gpkg")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "True"


def test_mean_probability_threshold_and_min_area(mask_raster, tmp_path):
    values = np.zeros((64, 64), np.uint8)
    values[10:20, 10:20] = 200
    values[10:20, 20:30] = 250  # one region of two levels
    values[40:42, 40:42] = 250  # 4 pixels = 1 m2
    values[50:60, 50:60] = 100  # below 0.5
    path = mask_raster(values, tags={"geoseg_thresholds": '{"building": 0.6}'})
    vectorize(path, tmp_path / "a.gpkg", block_size=32, min_area=1.5)
    regions = gpd.read_file(tmp_path / "a.gpkg")
    assert len(regions) == 1 and regions.area[0] == 200 * PIXEL_AREA
    assert regions.mean_probability[0] == pytest.approx(225 / 255)
    vectorize(path, tmp_path / "b.gpkg", block_size=32, threshold=0.3)
    assert len(gpd.read_file(tmp_path / "b.gpkg")) == 3


def test_nodata_is_never_a_region(make_raster, tmp_path):
    values = np.full((1, 64, 64), 255, np.uint8)
    values[0, :, 30:34] = 0  # nodata splits the region in two
    path = make_raster(width=64, height=64, count=1, data=values, nodata=0)
    vectorize(path, tmp_path / "v.gpkg", block_size=32)
    assert len(gpd.read_file(tmp_path / "v.gpkg")) == 2


def parcel_grid(rows=4, cols=5, cell=30, line=2):
    """A boundary probability raster: a grid of cells outlined by lines, one line gap of 2 px."""
    height, width = rows * cell + line, cols * cell + line
    boundary = np.zeros((height, width), np.uint8)
    for r in range(rows + 1):
        boundary[r * cell : r * cell + line, :] = 230
    for c in range(cols + 1):
        boundary[:, c * cell : c * cell + line] = 230
    boundary[cell + 10 : cell + 12, cell : cell + line] = 0  # a gap to close
    return boundary, rows * cols


@pytest.mark.parametrize("block_size", [32, 64, 4096])
def test_parcels_on_a_grid(block_size, mask_raster, tmp_path):
    boundary, expected = parcel_grid()
    path = mask_raster(boundary, name="boundary")
    summary = vectorize(path, tmp_path / "p.gpkg", mode="parcels", block_size=block_size)
    parcels = gpd.read_file(tmp_path / "p.gpkg", layer="parcels")
    assert len(parcels) == summary.polygons == expected
    assert parcels.is_valid.all() and (parcels["class"] == "parcel").all()
    # a coverage: no overlaps, neighbours share their edges
    union = shapely.union_all(parcels.geometry.values)
    assert union.area == pytest.approx(parcels.area.sum())
    assert shapely.get_num_interior_rings(union) == 0
    areas = parcels.area / PIXEL_AREA
    assert areas.min() > 28 * 28 and areas.max() < 32 * 32
    first = parcels.geometry.to_numpy()
    shared = shapely.length(shapely.intersection(first[:, None], first[None, :]))
    np.fill_diagonal(shared, 0)
    assert (shared.max(axis=1) > 10).all()


def test_parcels_simplified_stay_valid_without_gaps(mask_raster, tmp_path):
    boundary, expected = parcel_grid()
    for i in range(30):  # a diagonal splits one cell: a staircase that simplification smooths
        boundary[30 + i, 30 + i : 32 + i] = 230
    expected += 1
    path = mask_raster(boundary, name="boundary")
    vectorize(path, tmp_path / "exact.gpkg", mode="parcels", block_size=64)
    vectorize(path, tmp_path / "simple.gpkg", mode="parcels", block_size=64, simplify=2.0)
    exact = gpd.read_file(tmp_path / "exact.gpkg")
    simple = gpd.read_file(tmp_path / "simple.gpkg")
    assert len(simple) == expected and simple.is_valid.all()
    union = shapely.union_all(simple.geometry.values)
    assert union.area == pytest.approx(simple.area.sum())  # no overlaps
    assert union.area == pytest.approx(shapely.union_all(exact.geometry.values).area)  # no gaps
    vertices = [shapely.get_num_coordinates(f.geometry.to_numpy()).sum() for f in (simple, exact)]
    assert vertices[0] < 0.75 * vertices[1]


def test_regions_simplified_stay_valid(mask_raster, tmp_path):
    vectorize(mask_raster(hand_made_mask()), tmp_path / "v.gpkg", block_size=32, simplify=1.0)
    regions = gpd.read_file(tmp_path / "v.gpkg")
    assert len(regions) == components(hand_made_mask())[0] and regions.is_valid.all()


def test_empty_result_is_a_valid_layer(mask_raster, tmp_path):
    vectorize(mask_raster(np.zeros((40, 40), np.uint8)), tmp_path / "v.gpkg", block_size=32)
    empty = gpd.read_file(tmp_path / "v.gpkg", layer="regions")
    assert len(empty) == 0 and empty.crs is not None


@pytest.mark.parametrize(
    "case, words",
    [
        ("dtype", ["uint8"]),
        ("no_boundary", ["boundary"]),
        ("exists", ["already exists"]),
        ("no_crs", ["no CRS"]),
        ("missing", ["no such file"]),
    ],
)
def test_bad_input(case, words, mask_raster, make_raster, tmp_path):
    path, out, extra = mask_raster(hand_made_mask()), tmp_path / "out" / "v.gpkg", []
    if case == "dtype":
        path = make_raster(count=1, dtype="float32")
    elif case == "no_boundary":
        extra = ["--mode", "parcels"]
    elif case == "exists":
        out.parent.mkdir()
        out.write_text("keep")
    elif case == "no_crs":
        path = make_raster(count=1, crs=None)
    elif case == "missing":
        path = tmp_path / "nothing.tif"
    result = run("vectorize", path, "--out", out, *extra)
    assert_one_line_error(result, *words)
    if case == "exists":
        assert out.read_text() == "keep"
    else:
        assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_several_classes_each_merged_across_blocks(make_raster, tmp_path):
    mask = hand_made_mask()
    data = np.stack([mask, mask[::-1]])  # the second class upside down
    path = make_raster(width=150, height=120, count=2, data=data)
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "house")
        dst.set_band_description(2, "shed")
    summary = vectorize(path, tmp_path / "v.gpkg", block_size=32)
    regions = gpd.read_file(tmp_path / "v.gpkg")
    count = components(mask)[0]
    assert summary.per_class == {"house": count, "shed": count}
    assert (regions.groupby("class").pixels.sum() == (mask > 0).sum()).all()


def test_layer_writer_raises_what_its_session_raised(tmp_path):
    from geoseg.gpkg import LayerWriter

    writer = LayerWriter(tmp_path / "no-such-dir" / "v.gpkg", "regions", "EPSG:32633",
                         {"area": "float64"})  # fmt: skip
    with pytest.raises(Exception, match="no-such-dir"):
        writer.write(np.array([shapely.box(0, 0, 1, 1)]), area=np.array([1.0]))
        writer.close()
