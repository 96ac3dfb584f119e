"""Nothing lost, nothing passed off: full disks, writers that fail, outputs that are inputs and
two runs on one output (``docs/reliability.md``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from geoseg.io.outputs import lock_path, output_lock
from tests.helpers import assert_one_line_error, run, tag_prediction


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KB tmpfs mounted in ``tmp_path/small`` (skip where mounting is not allowed)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def visible(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_predict_on_a_full_disk_fails_in_one_line_and_publishes_nothing(
    tiny_model, make_raster, small_disk
):
    image = make_raster(width=900, height=900, count=3, seed=1)
    result = run("predict", image, "-m", tiny_model, "-o", small_disk / "p.tif")
    assert_one_line_error(result, "no space left", "p.tif")
    assert visible(small_disk) == []


def test_vectorize_on_a_full_disk_fails_in_one_line(tiny_model, make_raster, tmp_path, small_disk):
    image = make_raster(width=600, height=600, count=3, seed=2)
    pred = tmp_path / "p.tif"
    assert run("predict", image, "-m", tiny_model, "-o", pred).exit_code == 0
    (small_disk / ".filler").write_bytes(b"\0" * (150 << 10))
    for name in ("x.gpkg", "x.fgb", "x.parquet"):
        result = run("vectorize", pred, "-o", small_disk / name, "--mode", "regions")
        assert_one_line_error(result, "no space left", name)
    assert visible(small_disk) == []


def test_a_cog_writer_that_fails_midway_publishes_nothing_and_resume_finishes(
    tiny_model, make_raster, tmp_path, monkeypatch
):
    image = make_raster(width=700, height=500, count=3, seed=3)
    out = tmp_path / "p.tif"
    copy = rasterio.shutil.copy

    def truncated_copy(source, target, **options):  # returns normally, as GDAL does
        copy(source, target, **options)
        size = os.path.getsize(target)
        with open(target, "r+b") as file:
            file.truncate(size * 2 // 3)

    monkeypatch.setattr(rasterio.shutil, "copy", truncated_copy)
    assert_one_line_error(run("predict", image, "-m", tiny_model, "-o", out), "could not write")
    assert not out.exists()
    monkeypatch.setattr(rasterio.shutil, "copy", copy)
    assert run("predict", image, "-m", tiny_model, "-o", out, "--resume").exit_code == 0
    with rasterio.open(out) as written:
        assert written.read().std() > 0


def test_no_output_may_be_an_input_even_with_overwrite(tiny_model, make_raster, tmp_path):
    june = make_raster(width=128, height=128, name="june.tif", seed=4)
    july = make_raster(width=128, height=128, name="july.tif", seed=5)
    before = july.read_bytes()
    cases = [
        ["predict", june, july, "--dates", "-m", tiny_model, "-o", july],
        ["predict", june, "-m", tiny_model, "-o", tiny_model / "model.keras"],
        ["predict", june, "-m", tiny_model, "-o", tmp_path / "p.tif", "--vectors", july],
        ["stack", june, july, "-o", tmp_path / "x" / ".." / "july.tif"],
        ["vectorize", june, "-o", tmp_path],
    ]
    (tmp_path / "x").mkdir()
    for args in cases:
        assert_one_line_error(run(*args, "--overwrite"), "input")
    assert july.read_bytes() == before
    assert (tiny_model / "model.keras").stat().st_size > 1000


def test_stack_resolves_its_output_before_comparing(make_raster, tmp_path):
    a = make_raster(width=64, height=64, name="a.tif")
    b = make_raster(width=64, height=64, name="b.tif")
    assert run("stack", a, b, "-o", tmp_path / "s.vrt").exit_code == 0
    (tmp_path / "x").mkdir()
    result = run(
        "stack", tmp_path / "s.vrt", b, "-o", tmp_path / "x" / ".." / "s.vrt", "--overwrite"
    )
    assert_one_line_error(result, "is an input")
    with rasterio.open(tmp_path / "s.vrt") as stacked:
        assert stacked.count == 6


def test_a_second_run_on_a_locked_output_is_refused_and_a_dead_lock_is_free(
    tiny_model, make_raster, tmp_path
):
    image = make_raster(width=200, height=200, count=3, seed=6)
    out = tmp_path / "same.tif"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom geoseg.io.outputs import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run("predict", image, "-m", tiny_model, "-o", out)
        assert_one_line_error(result, "another geoseg run", f"pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(out).exists()  # left behind by the killed process: stale, not blocking
    assert run("predict", image, "-m", tiny_model, "-o", out, "--resume").exit_code == 0
    assert out.exists() and not lock_path(out).exists()


@pytest.mark.parametrize("command", ["tile", "train", "vectorize"])
def test_tile_train_and_vectorize_take_the_lock_on_their_output(
    command, tiny_chips, tiny_model, make_raster, tmp_path
):
    image = make_raster(width=128, height=128, count=3, seed=7)
    out = tmp_path / ("out.gpkg" if command == "vectorize" else "out")
    if command == "vectorize":
        run("predict", image, "-m", tiny_model, "-o", tmp_path / "p.tif")
    args = {
        "tile": ["tile", image, "--out", out, "--size", "64"],
        "train": ["train", tiny_chips, "--out", out, "--epochs", "1", "--folds", "1"],
        "vectorize": ["vectorize", tmp_path / "p.tif", "-o", out],
    }[command]
    with output_lock(out):
        assert_one_line_error(run(*args), "another geoseg run")
    assert not out.exists()


def test_folds_keep_an_interrupted_run_without_overwrite(tiny_chips, tmp_path):
    out = tmp_path / "m"
    work = tmp_path / ".m.partial"
    work.mkdir()
    (work / "last.keras").write_bytes(b"an interrupted run")
    result = run("train", tiny_chips, "--out", out, "--folds", "2", "--epochs", "1")
    assert_one_line_error(result, "interrupted run", "--overwrite")
    assert (work / "last.keras").read_bytes() == b"an interrupted run"


def nan_raster(make_raster, rows: int):
    data = np.random.default_rng(8).uniform(0, 1, (3, 256, 256)).astype("float32")
    data[:, :rows] = np.nan
    return make_raster(width=256, height=256, dtype="float32", data=data, name=f"nan{rows}.tif")


def test_nan_pixels_without_a_declared_nodata_are_nodata(tiny_model, make_raster, tmp_path):
    image = nan_raster(make_raster, 100)
    result = run("predict", image, "-m", tiny_model, "-o", tmp_path / "p.tif")
    assert result.exit_code == 0, result.output
    assert "NaN or infinite pixels are read as nodata" in result.output
    with rasterio.open(tmp_path / "p.tif") as pred:
        valid, near = pred.dataset_mask() > 0, pred.read()[:, 100:116]
    assert not valid[:100].any() and valid[100:].all()
    assert (near > 0).mean() > 0.9  # the good pixels beside them are predicted, not zeroed
    everything = nan_raster(make_raster, 256)
    result = run("predict", everything, "-m", tiny_model, "-o", tmp_path / "q.tif")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "q.tif") as pred:
        assert not pred.dataset_mask().any()
    result = run("tile", image, "--out", tmp_path / "chips", "--size", "64")
    assert result.exit_code == 0, result.output
    assert_one_line_error(
        run("tile", everything, "--out", tmp_path / "c2", "--size", "64"), "no valid pixels"
    )


def test_non_finite_float_options_are_refused(tiny_model, make_raster, tmp_path):
    image = make_raster(width=128, height=128, count=3, seed=9)
    assert run("predict", image, "-m", tiny_model, "-o", tmp_path / "p.tif").exit_code == 0
    for option, value in (("--simplify", "inf"), ("--min-area", "nan")):
        result = run("vectorize", tmp_path / "p.tif", "-o", tmp_path / "v.gpkg", option, value)
        assert result.exit_code == 2 and "not a finite number" in result.output
    from geoseg import vectorize
    from geoseg.errors import ParameterError

    with pytest.raises(ParameterError, match="finite"):
        vectorize(tmp_path / "p.tif", tmp_path / "v.gpkg", simplify=float("inf"))


def test_a_model_card_of_another_run_or_a_damaged_model_is_one_line(
    tiny_model, make_raster, tmp_path
):
    import json
    import shutil

    image = make_raster(width=128, height=128, count=3, seed=10)
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    card = json.loads((model / "geoseg.json").read_text())
    card["model"]["bands"] = 4
    card["bands"]["count"] = 4
    (model / "geoseg.json").write_text(json.dumps(card))
    four = make_raster(width=128, height=128, count=4, seed=10)
    result = run("predict", four, "-m", model, "-o", tmp_path / "p.tif")
    assert_one_line_error(result, "4 bands", "takes 3")
    shutil.copytree(tiny_model, model, dirs_exist_ok=True)
    (model / "model.keras").write_bytes(b"garbage")
    result = run("predict", image, "-m", model, "-o", tmp_path / "p.tif")
    assert_one_line_error(result, "cannot load the model", "damaged")


def test_training_names_the_first_missing_chip(tiny_chips, tmp_path):
    import shutil

    chips = tmp_path / "chips"
    shutil.copytree(tiny_chips, chips)
    victim = sorted((chips / "masks").iterdir())[0]
    victim.unlink()
    result = run("train", chips, "--out", tmp_path / "m", "--epochs", "1", "--folds", "1")
    assert_one_line_error(result, "missing", victim.name)
    assert not (tmp_path / "m").exists() and not (tmp_path / ".m.partial").exists()


def test_an_output_symlink_is_replaced_without_leftovers(make_raster, tmp_path):
    image = make_raster(width=128, height=128, count=3)
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "olink"
    link.symlink_to(target)
    assert run("tile", image, "--out", link, "--size", "64", "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".olink")) == []
    assert (link / "dataset.json").is_file() and target.is_dir()


def test_a_vector_file_of_several_layers_needs_one_named(make_raster, tmp_path):
    import geopandas as gpd
    import shapely

    image = make_raster(width=128, height=128, count=3)
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
    box = shapely.box(left, bottom, (left + right) / 2, (bottom + top) / 2)
    labels = tmp_path / "layers.gpkg"
    for name, geometry in (("aoi", shapely.box(left, bottom, right, top)), ("buildings", box)):
        gpd.GeoDataFrame(geometry=[geometry], crs="EPSG:32633").to_file(labels, layer=name)
    result = run("tile", image, "--labels", labels, "--out", tmp_path / "c", "--size", "64")
    assert_one_line_error(result, "2 layers", "aoi, buildings")
    result = run(
        "tile", image, "--labels", labels, "--labels-layer", "buildings",
        "--out", tmp_path / "c", "--size", "64", "--keep-empty", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "c" / "dataset.json").read_text())
    (frequency,) = record["class_frequencies"].values()
    assert frequency == pytest.approx(0.25, abs=0.02)  # the buildings, not the whole aoi
    result = run("evaluate", image, "--truth", labels)
    assert_one_line_error(result, "2 layers")


def test_evaluate_truth_layer_scores_that_layer_as_its_own_file(make_raster, tmp_path):
    import geopandas as gpd
    import shapely

    from geoseg import evaluate, vectorize

    mask = np.zeros((128, 128), np.uint8)
    mask[:64, :64] = 255
    prediction = tag_prediction(
        make_raster(width=128, height=128, count=1, data=mask[None]), ["building"], None
    )
    with rasterio.open(prediction) as src:
        left, bottom, right, top = src.bounds
    box = shapely.box(left, (bottom + top) / 2, (left + right) / 2, top)  # the top-left quarter
    layers, alone = tmp_path / "layers.gpkg", tmp_path / "buildings.gpkg"
    for name, geometry in (("aoi", shapely.box(left, bottom, right, top)), ("buildings", box)):
        gpd.GeoDataFrame(geometry=[geometry], crs="EPSG:32633").to_file(layers, layer=name)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:32633").to_file(alone)
    polygons = tmp_path / "p.gpkg"
    vectorize(prediction, polygons)

    def scores(predicted, truth, **options):
        found = evaluate(predicted, truth, **options).to_json()
        return {k: v for k, v in found.items() if k not in ("truth", "notes")}

    for predicted in (prediction, polygons):
        assert scores(predicted, layers, truth_layer="buildings") == scores(predicted, alone)
    assert scores(polygons, layers, truth_layer="buildings")["objects"]
    result = run("evaluate", prediction, "--truth", layers, "--truth-layer", "roads")
    assert_one_line_error(result, "no layer 'roads'", "aoi, buildings")
    result = run("evaluate", prediction, "--truth", prediction, "--truth-layer", "x")
    assert_one_line_error(result, "--truth-layer")


def test_geoparquet_labels_are_read_as_geoseg_writes_them(make_raster, tmp_path):
    import geopandas as gpd
    import shapely

    image = make_raster(width=128, height=128, count=3)
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
    box = shapely.box(left, bottom, (left + right) / 2, top)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:32633").to_parquet(tmp_path / "l.parquet")
    result = run(
        "tile", image, "--labels", tmp_path / "l.parquet", "--out", tmp_path / "c",
        "--size", "64", "--keep-empty", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_evaluate_says_a_truth_mask_ignores_its_background_and_takes_label_nodata(
    tiny_model, make_raster, tmp_path
):
    image = make_raster(width=128, height=128, count=3, seed=11)
    run("predict", image, "-m", tiny_model, "-o", tmp_path / "p.tif")
    truth = np.zeros((1, 128, 128), "uint8")
    truth[:, 40:60, 40:60] = 1
    mask = make_raster(width=128, height=128, count=1, data=truth, nodata=0, name="mask.tif")
    args = ["evaluate", tmp_path / "p.tif", "--truth", mask, "--classes", "parcels"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "declares nodata 0, so its background (0) is ignored" in result.output
    ignored = run(*args, "--json", tmp_path / "a.json")
    scored = run(*args, "--label-nodata", "none", "--json", tmp_path / "b.json")
    assert ignored.exit_code == 0 and scored.exit_code == 0, scored.output
    a = json.loads((tmp_path / "a.json").read_text())["pixels"]["parcels"]
    b = json.loads((tmp_path / "b.json").read_text())["pixels"]["parcels"]
    assert b["precision"] < a["precision"]  # the background now counts against it
