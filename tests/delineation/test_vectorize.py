"""geoseg vectorize: exact regions across block borders, parcels, simplification, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from helpers import assert_one_line_error, run, tag_prediction
from rasterio.windows import Window
from scipy import ndimage

import geoseg.delineation.border_merge
import geoseg.delineation.vectorizing
from geoseg.delineation.border_merge import BorderMerge
from geoseg.delineation.regions import PARCELS_HALO
from geoseg.delineation.vectorizing import Pieces, VectorJob, finish, vectorize, vectorize_block
from geoseg.errors import ParameterError
from geoseg.io.raster import block_windows
from geoseg.io.vector_files import read_layer_metadata, read_polygons

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
    def factory(mask, name="building", thresholds=None, **options):
        path = make_raster(width=mask.shape[1], height=mask.shape[0], count=1, data=mask[None])
        return tag_prediction(path, [name], thresholds)

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

    import geoseg.delineation.vectorizing

    path = mask_raster(hand_made_mask())
    vectorize(path, tmp_path / "threads.gpkg", block_size=32)
    # as for a large raster
    monkeypatch.setattr(geoseg.delineation.vectorizing, "PROCESS_PIXELS", 0)
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
        "from geoseg.io.vector_files import LayerWriter\n"
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
    path = mask_raster(values, thresholds={"building": 0.6})
    vectorize(path, tmp_path / "a.gpkg", block_size=32, min_area=1.5)
    regions = gpd.read_file(tmp_path / "a.gpkg")
    assert len(regions) == 1 and regions.area[0] == 200 * PIXEL_AREA
    assert regions.mean_probability[0] == pytest.approx(225 / 255)
    vectorize(path, tmp_path / "b.gpkg", block_size=32, threshold=0.3)
    assert len(gpd.read_file(tmp_path / "b.gpkg")) == 3


def test_a_filter_that_removes_every_polygon_is_a_warning(mask_raster, tmp_path, caplog):
    values = np.zeros((64, 64), np.uint8)
    values[10:20, 10:20] = 200
    path = mask_raster(values, thresholds={"building": 0.6})
    vectorize(path, tmp_path / "a.gpkg", block_size=32, min_area=1e12)
    assert len(gpd.read_file(tmp_path / "a.gpkg")) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{tmp_path / 'a.gpkg'} holds no polygon: none is left after dropping "
                      "those smaller than 1e+12 square CRS units"]  # fmt: skip


def test_nodata_is_never_a_region(make_raster, tmp_path):
    values = np.full((1, 64, 64), 255, np.uint8)
    values[0, :, 30:34] = 0  # nodata splits the region in two
    path = tag_prediction(make_raster(width=64, height=64, count=1, data=values, nodata=0), ["x"])
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


def test_the_closing_fallback_is_reported_in_the_summary_and_the_file(mask_raster, tmp_path):
    """A boundary-only prediction delineates by closing the boundary: said, never silent."""
    boundary, _ = parcel_grid()
    path = mask_raster(boundary, name="boundary")
    summary = vectorize(path, tmp_path / "p.gpkg", mode="parcels")
    assert summary.delineation == "closing"
    assert "warning: parcels by closing the boundary alone" in summary.describe()
    assert read_layer_metadata(tmp_path / "p.gpkg")["geoseg_delineation"] == "closing"
    regions = vectorize(path, tmp_path / "r.gpkg")
    assert "geoseg_delineation" not in read_layer_metadata(tmp_path / "r.gpkg")
    assert "warning" not in regions.describe()


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


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".parquet"])
def test_empty_result_is_a_valid_layer(suffix, mask_raster, tmp_path):
    out = tmp_path / f"v{suffix}"
    vectorize(mask_raster(np.zeros((40, 40), np.uint8)), out, block_size=32)
    empty = read_polygons(out) if suffix == ".parquet" else gpd.read_file(out, layer="regions")
    assert len(empty) == 0 and empty.crs == "EPSG:32633"
    assert "geoseg_extent" in read_layer_metadata(out)


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
    path = tag_prediction(make_raster(width=150, height=120, count=2, data=data), ["house", "shed"])
    summary = vectorize(path, tmp_path / "v.gpkg", block_size=32)
    regions = gpd.read_file(tmp_path / "v.gpkg")
    count = components(mask)[0]
    assert summary.per_class == {"house": count, "shed": count}
    assert (regions.groupby("class").pixels.sum() == (mask > 0).sum()).all()


def test_layer_writer_raises_what_its_session_raised(tmp_path):
    from geoseg.io.vector_files import LayerWriter

    writer = LayerWriter(tmp_path / "no-such-dir" / "v.gpkg", "regions", "EPSG:32633",
                         {"area": "float64"})  # fmt: skip
    with pytest.raises(Exception, match="no-such-dir"):
        writer.write(np.array([shapely.box(0, 0, 1, 1)]), area=np.array([1.0]))
        writer.close()


def test_min_area_applies_to_each_part_of_a_multi_part_parcel(mask_raster, tmp_path, monkeypatch):
    """Two cells given one label (as a parcel split inside a block, joined in its halo)."""
    boundary, expected = parcel_grid()
    real = geoseg.delineation.vectorizing.parcel_labels

    def two_cells_one_label(positive, valid):
        labels = real(positive, valid)
        h = PARCELS_HALO  # cells (1, 1) and (1, 3), in window coordinates
        labels[labels == labels[h + 45, h + 45]] = labels[h + 45, h + 105]
        return labels

    monkeypatch.setattr(geoseg.delineation.vectorizing, "parcel_labels", two_cells_one_label)
    path = mask_raster(boundary, name="boundary")
    out = tmp_path / "p.gpkg"
    vectorize(path, out, mode="parcels", min_area=10.0)  # each cell is about 225 m2
    parcels = gpd.read_file(out)
    assert len(parcels) == expected and (parcels.geom_type == "Polygon").all()
    assert parcels.pixels.sum() == pytest.approx(parcels.area.sum() / PIXEL_AREA, 0.01)
    vectorize(path, out, mode="parcels", min_area=1000.0, overwrite=True)
    assert len(gpd.read_file(out)) == 0


def test_min_area_with_a_multi_part_polygon():
    job = VectorJob("r.tif", 10, 10, (1,), (128,), "regions", Affine(0.5, 0, 0, 0, -0.5, 0), 2.0)
    parts = shapely.multipolygons([shapely.box(0, 0, 4, 4), shapely.box(6, 6, 7, 7)])
    pieces = Pieces(np.array([0, 0]), np.array([1, 2]), np.array([parts, shapely.box(0, 5, 1, 6)]),
                    np.array([17, 1]), np.array([17.0, 1.0]))  # fmt: skip
    kept = finish(pieces, job)
    assert len(kept) == 1 and shapely.area(kept.geometry[0]) == 4.0 and kept.labels[0] == 1


def owner_nbytes(array: np.ndarray) -> int:
    """Bytes of the memory that ``array`` keeps alive (its base's, for a view)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.nbytes if array.base is None else -1  # -1: memory held by another object


@pytest.mark.parametrize("mode", ["regions", "parcels"])
def test_kept_blocks_hold_only_their_edges_not_the_label_images(mode, mask_raster, tmp_path):
    path = mask_raster(parcel_grid(8, 8)[0], name="boundary")
    info = geoseg.delineation.vectorizing.open_raster_info(path)
    job = VectorJob(str(path), info.width, info.height, (1,), (128,), mode, info.transform)
    block = vectorize_block(job, (1, 1), Window(64, 64, 64, 64))
    lines = [line for pair in block.edges.values() for line in pair]
    assert len(lines) == 8 and all(line.base is None for line in lines)
    arrays = [*lines, *(getattr(block.border, f) for f in ("classes", "labels", "pixels", "score"))]
    assert all(owner_nbytes(a) == a.nbytes for a in arrays)


@pytest.mark.parametrize("suffix", [".fgb", ".parquet"])
def test_each_suffix_writes_its_format_with_the_same_polygons(suffix, mask_raster, tmp_path):
    import pyogrio

    path, out = mask_raster(hand_made_mask()), tmp_path / f"v{suffix}"
    vectorize(path, tmp_path / "v.gpkg", block_size=32)
    vectorize(path, out, block_size=32)
    reference = gpd.read_file(tmp_path / "v.gpkg")
    assert len(reference) == components(hand_made_mask())[0]
    if suffix == ".fgb":
        assert pyogrio.read_info(out)["driver"] == "FlatGeobuf"
        written = gpd.read_file(out)
    else:
        written = gpd.read_parquet(out)
    with rasterio.open(path) as src:
        assert written.crs == reference.crs == src.crs
        extent = list(src.bounds)
    assert len(written) == len(reference) == len(read_polygons(out))
    pairs = shapely.equals(reference.geometry.to_numpy()[:, None], written.geometry.to_numpy())
    assert pairs.any(axis=0).all() and pairs.any(axis=1).all()
    columns = ["class", "area", "pixels", "mean_probability"]
    rows = [f.sort_values("area")[columns].reset_index(drop=True) for f in (reference, written)]
    assert rows[0].equals(rows[1])
    stored = read_layer_metadata(out)
    assert stored == read_layer_metadata(tmp_path / "v.gpkg")
    assert json.loads(stored["geoseg_extent"]) == extent
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_draft_has_the_output_suffix(mask_raster, tmp_path, monkeypatch):
    drafts = []
    real = geoseg.delineation.vectorizing.hidden_sibling

    def recording(path, suffix):
        drafts.append(real(path, suffix))
        return drafts[-1]

    monkeypatch.setattr(geoseg.delineation.vectorizing, "hidden_sibling", recording)
    vectorize(mask_raster(hand_made_mask()), tmp_path / "v.fgb", block_size=32)
    assert len(drafts) == 1 and drafts[0].suffix == ".fgb" and drafts[0].name.startswith(".")


def test_an_unknown_suffix_is_refused_before_any_work(mask_raster, tmp_path):
    out = tmp_path / "out" / "v.shp"
    result = run("vectorize", mask_raster(hand_made_mask()), "--out", out)
    assert_one_line_error(result, "v.shp", ".gpkg", ".fgb", ".parquet")
    assert not out.parent.exists()
    with pytest.raises(ParameterError, match="GeoParquet"):
        vectorize(tmp_path / "no-such-raster.tif", tmp_path / "v.geojson")  # before opening it
    geoseg.delineation.vectorizing.check_vector_path("V.GPKG")


def test_a_raster_predict_did_not_write_is_refused(make_raster, tmp_path):
    out = tmp_path / "v.gpkg"
    result = run("vectorize", make_raster(count=3), "--out", out)
    assert_one_line_error(result, "not a geoseg prediction")
    assert not out.exists() and not list(tmp_path.glob(".v.gpkg*"))


SCRIPT = """
import logging
import sys

import geoseg.delineation.border_merge
import geoseg.delineation.vectorizing


def main():
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    geoseg.delineation.vectorizing.PROCESS_PIXELS = 0  # as for a large raster
    geoseg.delineation.vectorizing.vectorize(sys.argv[1], sys.argv[2], block_size=32, workers=2)


"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_user_script_without_a_main_guard_falls_back_to_threads(guarded, mask_raster, tmp_path):
    path = mask_raster(hand_made_mask())
    vectorize(path, tmp_path / "reference.gpkg", block_size=32)
    script = tmp_path / "user_script.py"
    script.write_text(
        SCRIPT + ('if __name__ == "__main__":\n    main()\n' if guarded else "main()\n")
    )
    done = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "v.gpkg")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ("20 tasks in 2 spawned processes" in done.stderr) == guarded, done.stderr
    assert ("threads instead of processes" in done.stderr) != guarded, done.stderr
    reference, written = (gpd.read_file(tmp_path / f"{n}.gpkg") for n in ("reference", "v"))
    pairs = shapely.equals(reference.geometry.to_numpy()[:, None], written.geometry.to_numpy())
    assert len(written) == len(reference) and pairs.any(axis=0).all() and pairs.any(axis=1).all()


def holey_mask(size: int = 200, seed: int = 0) -> np.ndarray:
    """0/255 blobs about 8 px across that run across blocks, with 3% of pixels as holes."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
    return np.where((smooth > 0.5) & (rng.random((size, size)) >= 0.03), 255, 0).astype(np.uint8)


def test_merged_regions_equal_the_regions_of_one_block(mask_raster, tmp_path):
    """Regions with holes across many 32 px blocks: the same polygons as from one block."""
    mask = holey_mask()
    path = mask_raster(mask)
    vectorize(path, tmp_path / "one.gpkg", block_size=4096)
    vectorize(path, tmp_path / "many.gpkg", block_size=32)
    one, many = (gpd.read_file(tmp_path / name) for name in ("one.gpkg", "many.gpkg"))
    count, sizes = components(mask)
    assert len(one) == len(many) == count
    assert sorted(np.rint(many.area / PIXEL_AREA).astype(int).tolist()) == sizes
    one, many = (f.join(f.bounds) for f in (one, many))
    key = ["pixels", "minx", "miny", "maxx", "maxy"]
    one, many = (f.sort_values(key).reset_index(drop=True) for f in (one, many))
    assert (one.pixels == many.pixels).all()
    holes = [shapely.get_num_interior_rings(f.geometry.values).sum() for f in (one, many)]
    assert holes[0] == holes[1] > 100
    assert shapely.equals(one.geometry.values, many.geometry.values).all()
    assert many.is_valid.all() and (many.geom_type == "Polygon").all()
    coords = [shapely.get_num_coordinates(f.geometry.values).sum() for f in (one, many)]
    assert coords[0] == coords[1]  # no vertex left on block edges


def test_drop_collinear_keeps_only_the_corners():
    from geoseg.delineation.border_merge import drop_collinear

    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    hole = [(0.5, 0.5), (1, 0.5), (1.5, 0.5), (1.5, 1.5), (0.5, 1.5), (0.5, 0.5)]
    (dropped,) = drop_collinear(np.array([shapely.Polygon(ring, [hole])]))
    assert shapely.get_num_coordinates(dropped) == 10 and dropped.area == 3.0


def test_the_overlay_union_stands_in_where_the_coverage_union_fails(
    mask_raster, tmp_path, monkeypatch
):
    mask = holey_mask(120)
    path = mask_raster(mask)
    monkeypatch.setattr(geoseg.delineation.border_merge, "coverage_union", lambda dense, area: None)
    vectorize(path, tmp_path / "v.gpkg", block_size=32)
    regions = gpd.read_file(tmp_path / "v.gpkg")
    count, sizes = components(mask)
    assert len(regions) == count and sorted(regions.pixels.tolist()) == sizes
    assert regions.is_valid.all() and (regions.geom_type == "Polygon").all()


def merged_in_order(blocks, order, block_size, grid):
    """Feed ``blocks`` to one BorderMerge in ``order``: the regions it unites (normalised WKB)
    and the number of pieces it held after each block."""
    merge, united, held = BorderMerge(1, block_size, *grid), [], []
    for i in order:
        united.extend(shapely.to_wkb(shapely.normalize(merge.add(blocks[i]).geometry)))
        held.append(len(merge.held))
    return sorted(united), held


def test_border_merge_unites_regions_as_blocks_arrive_in_any_order(mask_raster):
    mask = holey_mask(224)
    path = mask_raster(mask)
    info = geoseg.delineation.vectorizing.open_raster_info(path)
    job = VectorJob(str(path), info.width, info.height, (1,), (128,), "regions", info.transform)
    windows = block_windows(info.width, info.height, 32)
    blocks = [vectorize_block(job, divmod(i, 7), w) for i, w in enumerate(windows)]
    finals = sum(len(b.final) for b in blocks)
    in_rows, held = merged_in_order(blocks, range(49), 32, (7, 7))
    shuffled, _ = merged_in_order(blocks, np.random.default_rng(0).permutation(49), 32, (7, 7))
    assert in_rows == shuffled and held[-1] == 0
    assert finals + len(in_rows) == components(mask)[0]
    pieces = sum(len(b.border) for b in blocks)
    assert max(held) < 0.5 * pieces  # in row order about two of seven rows are held
