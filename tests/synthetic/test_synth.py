"""geoseg synth: a streamed, reproducible synthetic cadastre scene."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import assert_one_line_error, run
from rasterio.features import rasterize

import geoseg.synthetic.scene
from geoseg.errors import ParameterError
from geoseg.synthetic.scene import synth
from geoseg.tiling.tiler import tile


def test_scene_files_georeferencing_and_parcels(tmp_path):
    summary = synth(tmp_path / "s", size=600, resolution=2.0, seed=4, non_field=0)
    with rasterio.open(tmp_path / "s" / "image.tif") as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (600, 600, 3, "uint8")
        assert src.crs.to_epsg() == 32633 and src.res == (2.0, 2.0)
        assert src.profile["tiled"] and src.compression.value == "DEFLATE"
        scene_box, image = shapely.box(*src.bounds), src.read()
    parcels = gpd.read_file(tmp_path / "s" / "parcels.gpkg")
    assert parcels.crs.to_epsg() == 32633 and len(parcels) == summary.parcels > 20
    assert parcels.geometry.is_valid.all()
    assert abs(parcels.union_all().area - scene_box.area) < 1e-3 * scene_box.area
    assert parcels.area.sum() < 1.001 * scene_box.area  # no overlaps
    assert parcels.area.std() / parcels.area.mean() > 0.3  # varied sizes, not a grid
    assert summary.edges["none"] > 0 and summary.edges["hedge"] + summary.edges["road"] > 0
    assert image.std() > 10 and len(np.unique(image[0])) > 100
    buildings = gpd.read_file(tmp_path / "s" / "buildings.gpkg")
    assert len(buildings) == summary.buildings and buildings.within(parcels.union_all()).all()
    # --non-field 0: today's all-field scene, with an empty land cover layer
    assert summary.non_field == 0 and "0.0% non-field" in summary.describe()
    assert len(gpd.read_file(tmp_path / "s" / "landcover.gpkg")) == 0


def test_same_seed_same_scene(tmp_path):
    synth(tmp_path / "a", size=256, seed=1)
    synth(tmp_path / "b", size=256, seed=1)
    synth(tmp_path / "c", size=256, seed=2)
    read = {k: rasterio.open(tmp_path / k / "image.tif").read() for k in "abc"}
    np.testing.assert_array_equal(read["a"], read["b"])
    assert not np.array_equal(read["a"], read["c"])
    for layer in ("parcels", "landcover", "buildings"):
        a, b = (gpd.read_file(tmp_path / k / f"{layer}.gpkg") for k in "ab")
        assert a.geometry.geom_equals_exact(b.geometry, 0).all()
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def _scene_layers(folder):
    with rasterio.open(folder / "image.tif") as src:
        image, transform, box = src.read().astype(float), src.transform, shapely.box(*src.bounds)
    parcels = gpd.read_file(folder / "parcels.gpkg")
    cover = gpd.read_file(folder / "landcover.gpkg")
    return image, transform, box, parcels, cover


def test_non_field_land_is_not_parcels(tmp_path):
    summary = synth(tmp_path / "s", size=1536, resolution=1.0, seed=5)
    _, _, box, parcels, cover = _scene_layers(tmp_path / "s")
    assert list(parcels.columns) == ["parcel_id", "crop", "area_m2", "geometry"]
    assert list(cover.columns) == ["kind", "area_m2", "geometry"]
    assert set(cover.kind) == {"road", "verge", "farmyard", "village", "water", "wood"}
    assert cover.is_valid.all() and parcels.is_valid.all()
    assert (parcels.geom_type == "Polygon").all() and (parcels.area > 999).all()
    share = cover.area.sum() / box.area
    assert 0.15 <= share <= 0.30 and share == pytest.approx(summary.non_field, abs=1e-3)
    assert f"{summary.non_field:.1%} non-field land (road" in summary.describe()
    # parcels and non-field land share no ground and together cover the scene
    overlap = shapely.intersection(parcels.union_all(), cover.union_all()).area
    assert overlap < 1e-6 * box.area
    assert parcels.area.sum() + cover.area.sum() == pytest.approx(box.area, rel=1e-4)
    buildings = gpd.read_file(tmp_path / "s" / "buildings.gpkg")
    homes = cover[cover.kind.isin(["village", "farmyard"])].union_all()
    assert len(buildings) == summary.buildings > 10 and buildings.within(homes).all()


@pytest.mark.parametrize("share", [0.05, 0.4])
def test_non_field_share_follows_the_option(tmp_path, share):
    summary = synth(tmp_path / "s", size=1024, seed=6, buildings=False, non_field=share)
    cover = gpd.read_file(tmp_path / "s" / "landcover.gpkg")
    assert cover.area.sum() / (1024 * 0.5) ** 2 == pytest.approx(summary.non_field, abs=1e-3)
    assert summary.non_field == pytest.approx(share, abs=0.02)


def test_non_field_land_looks_different_from_fields(tmp_path):
    synth(tmp_path / "s", size=1024, resolution=1.0, seed=7)
    image, transform, _, parcels, cover = _scene_layers(tmp_path / "s")
    shape = image.shape[1:]

    def pixels(geoms):  # well inside the polygons: no mixed pixels at their outlines
        inner = [g for g in shapely.buffer(np.asarray(geoms), -3.0) if not g.is_empty]
        mask = rasterize(inner, out_shape=shape, transform=transform).astype(bool)
        return image[:, mask]

    fields = pixels(parcels.geometry)
    wood = pixels(cover.geometry[cover.kind == "wood"])
    water = pixels(cover.geometry[cover.kind == "water"])
    assert fields.shape[1] > 1e5 and wood.shape[1] > 1e4 and water.shape[1] > 1e3

    def greenness(px):
        return px[1] / px.sum(0)

    # woods: darker and greener than fields, and rough (tree crowns)
    assert wood.mean() < 0.7 * fields.mean()
    assert greenness(wood).mean() > greenness(fields).mean() + 0.03
    assert wood.sum(0).std() / wood.sum(0).mean() > 0.08
    # water: darker than woods, blue rather than red, and smooth
    assert water.mean() < wood.mean() and water[2].mean() > 1.5 * water[0].mean()
    assert water.sum(0).std() / water.sum(0).mean() < 0.5 * wood.sum(0).std() / wood.sum(0).mean()


def test_non_field_option_and_bad_share(tmp_path):
    result = run("synth", "--out", tmp_path / "s", "--size", 256, "--non-field", 0.3)
    assert result.exit_code == 0, result.output
    assert "non-field land" in result.output and (tmp_path / "s" / "landcover.gpkg").exists()
    assert_one_line_error(run("synth", "--out", tmp_path / "t", "--non-field", 1.5), "--non-field")
    with pytest.raises(ParameterError, match="`non_field`"):
        synth(tmp_path / "u", size=256, non_field=-0.1)


def test_sixteen_bit_four_band_scene(tmp_path):
    synth(tmp_path / "s", size=256, bands=4, dtype="uint16", crs="EPSG:25832", buildings=False)
    with rasterio.open(tmp_path / "s" / "image.tif") as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (4, "uint16", 25832)
        assert src.descriptions == ("red", "green", "blue", "nir") and src.read().max() > 255
    assert len(gpd.read_file(tmp_path / "s" / "buildings.gpkg")) == 0


def test_scene_is_rendered_window_by_window(tmp_path, monkeypatch):
    shapes = []
    render = geoseg.synthetic.scene.render

    def spy(scene, window, *args):
        shapes.append((int(window.height), int(window.width)))
        return render(scene, window, *args)

    monkeypatch.setattr(geoseg.synthetic.scene, "render", spy)
    synth(tmp_path / "s", size=1100, resolution=2.0)
    assert len(shapes) == 9 and max(max(s) for s in shapes) == geoseg.synthetic.scene.WINDOW


def test_parcel_boundaries_are_a_rare_class(tmp_path):
    synth(tmp_path / "s", size=1024, resolution=1.0, seed=2)
    summary = tile(
        [tmp_path / "s" / "image.tif"],
        tmp_path / "chips",
        labels=tmp_path / "s" / "parcels.gpkg",
        boundary_width="1px",
    )
    assert summary.classes == ["parcels", "boundary"]
    assert 0.005 < summary.class_frequencies["boundary"] < 0.1


def test_band_order_writes_the_same_bands_in_another_order(tmp_path):
    synth(str(tmp_path / "rgb"), size=128, seed=2)
    synth(str(tmp_path / "bgr"), size=128, seed=2, band_order="blue,green,red")
    with rasterio.open(tmp_path / "rgb" / "image.tif") as rgb:
        with rasterio.open(tmp_path / "bgr" / "image.tif") as bgr:
            assert bgr.descriptions == ("blue", "green", "red")
            np.testing.assert_array_equal(bgr.read(), rgb.read()[::-1])
    assert_one_line_error(
        run("synth", "--out", tmp_path / "x", "--band-order", "blue,red"), "red, green and blue"
    )
