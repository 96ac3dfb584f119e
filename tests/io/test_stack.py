"""Input stacks (geoseg stack: bands of several files as one VRT) and temporal consensus
(predict --dates: the per-pixel mean or median of each date's probabilities)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared_sample
from helpers import assert_one_line_error, run

from geoseg import predict, tile
from geoseg.inference.predictor import combine_dates
from geoseg.io.stack import write_stack

FINE = Affine(10.0, 0, 600_000.0, 0, -10.0, 5_800_000.0)
COARSE = Affine(20.0, 0, 600_000.0, 0, -20.0, 5_800_000.0)


def test_bands_in_the_order_given_named_after_their_files(make_raster, tmp_path):
    a = make_raster(count=1, dtype="int16", transform=FINE, name="june_red.tif", seed=1)
    b = make_raster(count=2, dtype="int16", transform=FINE, name="june_nirs.tif", seed=2)
    out = write_stack([b, a], tmp_path / "stack.vrt")
    with rasterio.open(out) as src, rasterio.open(a) as first, rasterio.open(b) as second:
        assert src.count == 3 and src.descriptions == ("june_nirs_1", "june_nirs_2", "june_red")
        assert (src.read([1, 2]) == second.read()).all() and (src.read(3) == first.read(1)).all()
        assert src.transform == second.transform and src.crs == second.crs


def test_members_on_another_grid_are_resampled_onto_the_first(make_raster, tmp_path):
    """Integer data: nearest neighbour (a 20 m pixel covers 2 x 2 pixels of 10 m); floating
    point: bilinear (values between the neighbours')."""
    fine = make_raster(width=40, height=30, count=1, dtype="uint16", transform=FINE)
    coarse_int = make_raster(width=20, height=15, count=1, dtype="uint16", transform=COARSE)
    ramp = np.tile(np.arange(20, dtype="float32"), (15, 1))[None]
    coarse_float = make_raster(
        width=20, height=15, count=1, dtype="float32", transform=COARSE, data=ramp
    )
    out = write_stack([fine, coarse_int, coarse_float], tmp_path / "s.vrt")
    with rasterio.open(out) as src, rasterio.open(coarse_int) as coarse:
        assert (src.width, src.height) == (40, 30) and src.dtypes[1] == "float32"
        expected = np.repeat(np.repeat(coarse.read(1), 2, axis=0), 2, axis=1)
        assert (src.read(2) == expected).all()
        inner = src.read(3)[5:25, 4:36]
        assert np.allclose(np.diff(inner, axis=1), 0.5, atol=1e-4)  # half a coarse step


def test_nodata_in_any_member_or_outside_it_is_nodata_in_the_stack(make_raster, tmp_path):
    rng = np.random.default_rng(0)
    one = rng.integers(1, 1000, (1, 30, 40)).astype("int16")
    two = rng.integers(1, 1000, (1, 20, 40)).astype("int16")  # covers the top 20 rows only
    one[0, 3, 5] = -1
    two[0, 10, 7] = -1
    a = make_raster(width=40, height=30, count=1, dtype="int16", nodata=-1, data=one,
                    transform=FINE)  # fmt: skip
    b = make_raster(width=40, height=20, count=1, dtype="int16", nodata=-1, data=two,
                    transform=FINE)  # fmt: skip
    with rasterio.open(write_stack([a, b], tmp_path / "s.vrt")) as src:
        valid = src.dataset_mask() > 0
    expected = np.ones((30, 40), bool)
    expected[3, 5] = expected[10, 7] = False
    expected[20:] = False
    assert (valid == expected).all()


def test_bad_stacks_are_one_line_errors(make_raster, tmp_path):
    a = make_raster(count=1, transform=FINE, name="a.tif")
    other_crs = make_raster(count=1, transform=FINE, crs="EPSG:32632", name="b.tif")
    out = tmp_path / "s.vrt"
    assert_one_line_error(run("stack", a, other_crs, "-o", out), "CRS", "reproject")
    assert_one_line_error(run("stack", a, "-o", out), "at least two")
    assert_one_line_error(run("stack", a, a, "-o", out), "both named")
    assert_one_line_error(run("stack", a, other_crs, "-o", tmp_path / "s.tif"), ".vrt")
    assert not out.exists()
    assert run("stack", a, "--like", a, "-o", out).exit_code == 0  # one raster onto a grid


def test_magdeburg_two_dates_stacked_tile_like_any_raster(tmp_path):
    """FTW's input: the 8 bands of June and August, one file per band, int16 nodata -10000."""
    folder = shared_sample("magdeburg_s2_fields", "s2_l3a_data")
    files = [
        folder / f"s2_l3a_2021{month}_{band}.tif"
        for month in ("0615", "0815")
        for band in ("red", "green", "blue", "nir")
    ]
    vrt = tmp_path / "season.vrt"
    assert run("stack", *files, "-o", vrt).exit_code == 0
    fields = shared_sample("magdeburg_s2_fields", "fields", "magdeburger_boerde_train10.shp")
    chips = tmp_path / "chips"
    tile([str(vrt)], str(chips), labels=str(fields), size=128, workers=1)
    with rasterio.open(next((chips / "images").glob("*.tif"))) as chip:
        assert chip.count == 8 and chip.descriptions[4] == "s2_l3a_20210815_red"
    with rasterio.open(vrt) as src, rasterio.open(files[0]) as june:
        assert ((src.dataset_mask() > 0) == (june.read(1) != -10000)).all()


@pytest.fixture(scope="module")
def two_dates(tiny_chips, tmp_path_factory):
    """The tiny scene and a second date of it: darker, with a nodata hole."""
    scene = tiny_chips.parent / "scene" / "image.tif"
    folder = tmp_path_factory.mktemp("dates")
    with rasterio.open(scene) as src:
        profile, data = src.profile, src.read()
    later = (data * 0.8).astype(data.dtype)
    profile.update(nodata=0)
    later[:, 100:140, 200:260] = 0
    second = folder / "later.tif"
    with rasterio.open(second, "w", **profile) as dst:
        dst.write(later)
    return scene, second


def test_consensus_is_the_mean_of_the_dates_predicted_alone(two_dates, tiny_model, tmp_path):
    first, second = two_dates
    alone = []
    for date in (first, second):
        out = tmp_path / f"{date.stem}.tif"
        predict(date, tiny_model, out, device="cpu", mixed_precision="off", block_size=128)
        with rasterio.open(out) as src:
            alone.append((src.read().astype(float), src.dataset_mask() > 0))
    both = tmp_path / "both.tif"
    predict([first, second], tiny_model, both, device="cpu", mixed_precision="off",
            block_size=128)  # fmt: skip
    with rasterio.open(both) as src:
        combined = src.read().astype(float)
        assert (src.dataset_mask() > 0).all()
    (one, valid_one), (two, valid_two) = alone
    both_valid = valid_one & valid_two
    mean = (one + two) / 2
    # each date rounded to 1/255 before the mean here, only once in the consensus
    assert np.abs(combined[:, both_valid] - mean[:, both_valid]).max() <= 1.0
    only_first = valid_one & ~valid_two
    assert only_first.sum() > 1000  # the hole: the first date alone decides there
    assert np.abs(combined[:, only_first] - one[:, only_first]).max() <= 1.0


def test_consensus_does_not_depend_on_the_block_size(two_dates, tiny_model, tmp_path):
    outputs = []
    for block in (64, 256):
        out = tmp_path / f"b{block}.tif"
        predict(list(two_dates), tiny_model, out, device="cpu", mixed_precision="off",
                block_size=block, consensus="median")  # fmt: skip
        with rasterio.open(out) as src:
            outputs.append(src.read())
    assert (outputs[0] == outputs[1]).all()


def test_median_of_two_dates_is_their_mean_and_nodata_dates_are_left_out():
    a, b, c = (np.full((2, 2, 1), v, np.float32) for v in (0.2, 0.6, 0.9))
    valid = [np.ones((2, 2), bool), np.ones((2, 2), bool), np.array([[1, 0], [0, 0]], bool)]
    mean, seen = combine_dates([a, b, c], valid)
    assert mean[0, 0, 0] == pytest.approx(1.7 / 3) and mean[1, 1, 0] == pytest.approx(0.4)
    median, _ = combine_dates([a, b, c], valid, "median")
    assert median[0, 0, 0] == pytest.approx(0.6) and median[1, 1, 0] == pytest.approx(0.4)
    assert seen.all()


def test_dates_bad_input(two_dates, tiny_model, make_raster, tmp_path):
    first, _ = two_dates
    out = tmp_path / "p.tif"
    result = run("predict", first, first, "-m", tiny_model, "-o", out)
    assert_one_line_error(result, "--dates")
    elsewhere = make_raster(width=100, height=100, count=3)
    result = run("predict", first, elsewhere, "--dates", "-m", tiny_model, "-o", out)
    assert_one_line_error(result, "grid", "--like")
    assert not out.exists()


def test_a_stack_in_another_band_order_is_refused(make_raster, tmp_path, tiny_model):
    import json

    card = json.loads((tiny_model / "geoseg.json").read_text())
    names = card["bands"]["descriptions"]
    if not all(names):
        pytest.skip("the tiny model's bands have no names")
    bands = [make_raster(count=1, name=f"{name}.tif", seed=i) for i, name in enumerate(names)]
    swapped = write_stack([bands[1], bands[0], *bands[2:]], tmp_path / "swapped.vrt")
    result = run("predict", swapped, "-m", tiny_model, "-o", tmp_path / "p.tif")
    assert_one_line_error(result, "band 1", names[1], names[0])
