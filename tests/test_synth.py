"""geoseg synth: a streamed, reproducible synthetic cadastre scene."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import shapely

import geoseg.synthetic
from geoseg.synthetic import synth
from geoseg.tiling import tile


def test_scene_files_georeferencing_and_parcels(tmp_path):
    summary = synth(tmp_path / "s", size=600, resolution=2.0, seed=4)
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


def test_same_seed_same_scene(tmp_path):
    synth(tmp_path / "a", size=256, seed=1)
    synth(tmp_path / "b", size=256, seed=1)
    synth(tmp_path / "c", size=256, seed=2)
    read = {k: rasterio.open(tmp_path / k / "image.tif").read() for k in "abc"}
    np.testing.assert_array_equal(read["a"], read["b"])
    assert not np.array_equal(read["a"], read["c"])


def test_sixteen_bit_four_band_scene(tmp_path):
    synth(tmp_path / "s", size=256, bands=4, dtype="uint16", crs="EPSG:25832", buildings=False)
    with rasterio.open(tmp_path / "s" / "image.tif") as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (4, "uint16", 25832)
        assert src.descriptions == ("red", "green", "blue", "nir") and src.read().max() > 255
    assert len(gpd.read_file(tmp_path / "s" / "buildings.gpkg")) == 0


def test_scene_is_rendered_window_by_window(tmp_path, monkeypatch):
    shapes = []
    render = geoseg.synthetic.render

    def spy(scene, window, *args):
        shapes.append((int(window.height), int(window.width)))
        return render(scene, window, *args)

    monkeypatch.setattr(geoseg.synthetic, "render", spy)
    synth(tmp_path / "s", size=1100, resolution=2.0)
    assert len(shapes) == 9 and max(max(s) for s in shapes) == geoseg.synthetic.WINDOW


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
