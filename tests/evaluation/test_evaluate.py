"""geoseg evaluate: exact pixel scores, tolerant boundary F1, object matching, bad input."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run

from geoseg.contracts import PredictionTags
from geoseg.evaluation.evaluator import evaluate, match_objects

X0, Y0, PIXEL = 500_000.0, 5_300_000.0, 0.5  # make_raster's grid


def pixel_box(row0, col0, row1, col1):
    """The CRS box of pixel rows row0..row1-1 and columns col0..col1-1."""
    return shapely.box(X0 + col0 * PIXEL, Y0 - row1 * PIXEL, X0 + col1 * PIXEL, Y0 - row0 * PIXEL)


@pytest.fixture
def prediction(make_raster):
    def factory(values: dict, size=(100, 100), nodata=None):
        names = list(values)
        data = np.stack([values[n] for n in names]).astype(np.uint8)
        path = make_raster(width=size[1], height=size[0], count=len(names), data=data)
        with rasterio.open(path, "r+") as dst:
            for band, name in enumerate(names, start=1):
                dst.set_band_description(band, name)
            dst.update_tags(**PredictionTags(tuple(names)).to_tags())
            if nodata is not None:
                dst.write_mask(np.where(nodata, 0, 255).astype(np.uint8))
        return path

    return factory


def square(rows, cols, size=(100, 100), value=255):
    out = np.zeros(size, np.uint8)
    out[rows[0] : rows[1], cols[0] : cols[1]] = value
    return out


def test_pixel_scores_are_exact_across_blocks(prediction, make_vector, tmp_path):
    pred = prediction({"building": square((15, 35), (10, 30))})
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="building.gpkg")
    result = evaluate(pred, truth, block_size=32, json_out=tmp_path / "s.json")
    scores = result.pixels["building"]
    assert scores["iou"] == pytest.approx(300 / 500) and scores["f1"] == pytest.approx(0.75)
    assert scores["precision"] == pytest.approx(0.75) and scores["recall"] == pytest.approx(0.75)
    assert json.loads((tmp_path / "s.json").read_text())["pixels"]["building"] == scores


def test_nodata_is_not_scored(prediction, make_vector):
    nodata = np.zeros((100, 100), bool)
    nodata[30:35, :] = True  # hides the 100 false positive pixels
    pred = prediction({"building": square((15, 35), (10, 30))}, nodata=nodata)
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="building.gpkg")
    assert evaluate(pred, truth, block_size=32).pixels["building"]["precision"] == 1.0


def test_truth_in_another_crs_gives_the_same_scores(prediction, make_vector):
    pred = prediction({"building": square((15, 35), (10, 30))})
    box = gpd.GeoSeries([pixel_box(10, 10, 30, 30)], crs="EPSG:32633").to_crs("EPSG:4326")
    truth = make_vector(box.values, crs="EPSG:4326", name="building.gpkg")
    assert evaluate(pred, truth).pixels["building"]["iou"] == pytest.approx(0.6, abs=0.02)


def test_label_raster_on_another_grid_is_resampled(prediction, make_raster):
    pred = prediction({"class_1": square((10, 30), (10, 30))})
    coarse = np.zeros((1, 50, 50), np.uint8)
    coarse[0, 5:15, 5:15] = 1  # 1 m pixels: the same square
    truth = make_raster(
        width=50, height=50, count=1, data=coarse, name="truth.tif",
        transform=rasterio.Affine(1.0, 0, X0, 0, -1.0, Y0),
    )  # fmt: skip
    result = evaluate(pred, truth)
    assert result.pixels["class_1"]["iou"] == 1.0
    assert any("resampled" in note for note in result.notes)


def test_boundary_f1_forgives_small_offsets(prediction, make_vector):
    boundary = np.zeros((100, 100), np.uint8)
    boundary[22:79, 22] = boundary[22:79, 78] = boundary[22, 22:79] = boundary[78, 22:79] = 255
    pred = prediction({"boundary": boundary})  # the outline 2 px inside the true one
    truth = make_vector([pixel_box(20, 20, 80, 80)], name="parcels.gpkg")
    result = evaluate(pred, truth, boundary_tolerance="2px", block_size=32)
    assert result.pixels["boundary"]["f1"] < 0.2  # no pixel on the exact line
    assert result.boundary["precision"] == 1.0 and result.boundary["tolerance_px"] == 2
    # true lines burned on a pixel edge are 2 px wide there; their far row is 3 px away
    assert result.boundary["recall"] > 0.75
    assert result.boundary["f1"] > 3 * result.pixels["boundary"]["f1"]


def test_object_matching_one_to_one_at_iou_half():
    truth = np.array(
        [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)]
    )
    predicted = np.array([
        shapely.box(0, 0, 10, 10),  # exact
        shapely.box(22, 0, 32, 10),  # IoU 8/12
        shapely.box(45, 0, 55, 10),  # IoU 5/15
        shapely.box(0, 0, 10, 9),  # a duplicate of the first: only one may match
        shapely.box(90, 90, 95, 95),  # nothing there
    ])  # fmt: skip
    scores = match_objects(predicted, truth)
    assert (scores["matched"], scores["predicted"], scores["true"]) == (2, 5, 3)
    assert scores["precision"] == pytest.approx(0.4) and scores["recall"] == pytest.approx(2 / 3)


def test_cli_scores_parcels_polygons(tmp_path, make_vector):
    from geoseg.delineation.vectorizing import vectorize

    truth_boxes = [pixel_box(0, 0, 20, 20), pixel_box(0, 20, 20, 40)]
    truth = make_vector(truth_boxes, name="parcels.gpkg")
    boundary = np.zeros((1, 20, 40), np.uint8)
    boundary[0, :, 19:21] = 230
    import rasterio as rio

    path = tmp_path / "pred.tif"
    profile = dict(driver="GTiff", width=40, height=20, count=1, dtype="uint8",
                   crs="EPSG:32633", transform=rio.Affine(PIXEL, 0, X0, 0, -PIXEL, Y0))  # fmt: skip
    with rio.open(path, "w", **profile) as dst:
        dst.write(boundary)
        dst.set_band_description(1, "boundary")
        dst.update_tags(**PredictionTags(("boundary",)).to_tags())
    vectorize(path, tmp_path / "pred.gpkg", mode="parcels", block_size=32)
    result = run("evaluate", tmp_path / "pred.gpkg", "--truth", truth, "--json",
                 tmp_path / "s.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "parcel" in result.output
    objects = json.loads((tmp_path / "s.json").read_text())["objects"]["parcel"]
    assert (objects["matched"], objects["true"], objects["predicted"]) == (2, 2, 2)


@pytest.mark.parametrize("case, words", [("missing", ["no such file"]),
                                         ("classes", ["not in the truth"])])  # fmt: skip
def test_bad_input(case, words, prediction, make_vector, tmp_path):
    pred = prediction({"house": square((0, 5), (0, 5)), "shed": square((0, 5), (0, 5))})
    truth = make_vector([pixel_box(0, 0, 5, 5)] * 2, kind=["a", "b"], name="t.gpkg")
    if case == "missing":
        truth = tmp_path / "nothing.gpkg"
    result = run("evaluate", pred, "--truth", truth, "--class-field", "kind")
    assert_one_line_error(result, *words)


def test_quicklook_png(prediction, make_raster, make_vector, tmp_path):
    from PIL import Image

    pred = prediction({"building": square((15, 35), (10, 30))}, size=(100, 100))
    image = make_raster(width=100, height=100, count=3)
    vectors = make_vector([pixel_box(10, 10, 30, 30)], name="b.gpkg")
    result = run("quicklook", pred, "--image", image, "--vectors", vectors, "--out",
                 tmp_path / "q.png", "--max-size", "200")  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "q.png") as png:
        assert png.size == (200, 200)
        pixels = np.asarray(png.convert("RGB")).astype(int)
    assert pixels.std() > 10  # not blank
    assert_one_line_error(run("quicklook", pred, "--class", "road", "--out", tmp_path / "r.png"),
                          "road")  # fmt: skip


def regions_gpkg(tmp_path, prediction, values: dict):
    """Polygons of a regions-mode vectorisation of a prediction with these classes."""
    from geoseg.delineation.vectorizing import vectorize

    vectorize(prediction(values), tmp_path / "pred.gpkg", block_size=64)
    return tmp_path / "pred.gpkg"


def test_objects_are_scored_only_for_classes_in_the_truth(prediction, make_vector, tmp_path):
    """A boundary class is not matched against buildings; the one truth class is by name."""
    pred = regions_gpkg(tmp_path, prediction, {
        "building": square((10, 30), (10, 30)) | square((50, 60), (50, 60)),
        "boundary": square((0, 100), (40, 42)),
    })  # fmt: skip
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="buildings.gpkg")
    result = evaluate(pred, truth)
    assert set(result.objects) == {"building"}
    assert (result.objects["building"]["matched"], result.objects["building"]["predicted"]) == (
        1, 2
    )  # fmt: skip
    assert any("boundary" in note for note in result.notes)
    chosen = evaluate(pred, truth, classes=["building"])
    assert chosen.objects == result.objects
    kinds = make_vector([pixel_box(10, 10, 30, 30)] * 2, kind=["building", "road"], name="k.gpkg")
    assert set(evaluate(pred, kinds, class_field="kind").objects) == {"building"}


@pytest.mark.parametrize("case", ["json_exists", "json_is_prediction", "json_is_truth"])
def test_json_never_replaces_a_file_by_accident(case, prediction, make_vector, tmp_path):
    pred = prediction({"building": square((15, 35), (10, 30))})
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="building.gpkg")
    target = {"json_exists": tmp_path / "s.json", "json_is_prediction": pred,
              "json_is_truth": truth}[case]  # fmt: skip
    if case == "json_exists":
        target.write_text("keep me")
    before = target.read_bytes()
    extra = [] if case == "json_exists" else ["--overwrite"]
    result = run("evaluate", pred, "--truth", truth, "--json", target, *extra)
    assert_one_line_error(result, "is an input" if extra else "already exists")
    assert target.read_bytes() == before
    assert run("evaluate", pred, "--truth", truth, "--json", tmp_path / "s.json",
               "--overwrite").exit_code == 0 or case != "json_exists"  # fmt: skip


def test_plain_rasters_are_refused(make_raster, make_vector, tmp_path):
    image = make_raster(width=64, height=64, count=3)
    truth = make_vector([pixel_box(0, 0, 5, 5)], name="building.gpkg")
    for args in (["evaluate", image, "--truth", truth],
                 ["quicklook", image, "--out", tmp_path / "q.png"],
                 ["vectorize", image, "--out", tmp_path / "v.gpkg"]):  # fmt: skip
        result = run(*args)
        assert_one_line_error(result, "not a geoseg prediction")
        assert "--class-field" not in result.output
    assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob("*.gpkg")) == [truth]


def test_quicklook_never_writes_over_an_input(prediction, make_raster, tmp_path):
    pred = prediction({"building": square((15, 35), (10, 30))})
    image = make_raster(width=100, height=100, count=3)
    for target in (pred, image):
        before = target.read_bytes()
        result = run("quicklook", pred, "--image", image, "--out", target, "--overwrite")
        assert_one_line_error(result, "is an input")
        assert target.read_bytes() == before


@pytest.mark.parametrize("suffix", [".fgb", ".parquet"])
def test_objects_from_flatgeobuf_and_geoparquet(suffix, prediction, make_vector, tmp_path):
    from geoseg.delineation.vectorizing import vectorize

    pred = prediction({"building": square((10, 30), (10, 30))})
    truth = make_vector([pixel_box(10, 10, 30, 30), pixel_box(200, 200, 210, 210)],
                        name="building.gpkg")  # fmt: skip
    vectorize(pred, tmp_path / f"pred{suffix}", block_size=64)
    objects = evaluate(tmp_path / f"pred{suffix}", truth).objects["building"]
    # the second true box lies outside the predicted raster: left out by the recorded extent
    assert (objects["matched"], objects["true"], objects["predicted"]) == (1, 1, 1)


def test_classes_score_the_chosen_band(prediction, make_vector):
    """--classes boundary scores the boundary band, not the first band of the raster."""
    pred = prediction(
        {"parcels": square((0, 100), (0, 100)), "boundary": square((10, 30), (10, 30))}
    )
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="parcels.gpkg")
    chosen = evaluate(pred, truth, classes=["boundary"], boundary_width="1px")
    both = evaluate(pred, truth, boundary_width="1px")
    assert list(chosen.pixels) == ["boundary"]
    assert chosen.pixels["boundary"] == both.pixels["boundary"]
    assert chosen.boundary == both.boundary


def test_regression_bands_are_not_scored_as_classes(make_raster, make_vector):
    data = np.stack([square((10, 30), (10, 30)), np.zeros((100, 100), np.uint8),
                     square((15, 25), (15, 25), value=200)])  # fmt: skip
    path = make_raster(width=100, height=100, count=3, data=data)
    targets = {
        "parcels": {"kind": "class", "role": "extent"},
        "boundary": {"kind": "class", "role": "boundary"},
        "distance": {"kind": "regression", "role": "distance"},
    }
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = tuple(targets)
        dst.update_tags(**PredictionTags(tuple(targets), targets=targets).to_tags())
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="parcels.gpkg")
    result = evaluate(path, truth, boundary_width="1px")
    assert list(result.pixels) == ["parcels", "boundary"]
    assert result.pixels["parcels"]["iou"] == pytest.approx(1.0)


def test_sparse_truth_leaves_objects_far_from_every_drawn_one_unscored(
    prediction, make_vector, tmp_path
):
    """One building drawn; a predicted one 2 px from it is scored (a false positive), one 20 px
    away may be undrawn and is not."""
    pred = regions_gpkg(tmp_path, prediction, {
        "building": square((10, 30), (10, 30)) | square((10, 30), (32, 34))
        | square((50, 60), (50, 60)),
    })  # fmt: skip
    truth = make_vector([pixel_box(10, 10, 30, 30)], name="buildings.gpkg")
    assert evaluate(pred, truth).objects["building"]["predicted"] == 3
    for reach in ("4px", str(4 * PIXEL)):
        sparse = evaluate(pred, truth, sparse_truth=reach)
        objects = sparse.objects["building"]
        assert (objects["matched"], objects["predicted"], objects["true"]) == (1, 2, 1)
        assert any("1 of 3 predicted objects" in note for note in sparse.notes)
    result = run("evaluate", pred, "--truth", truth, "--sparse-truth", "4px")
    assert result.exit_code == 0 and "not scored" in result.output, result.output
    raster = prediction({"building": square((10, 30), (10, 30))})
    assert_one_line_error(
        run("evaluate", raster, "--truth", truth, "--sparse-truth", "4px"), "give the polygons"
    )
