"""geoseg tile on the real samples in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import rasterio
from conftest import shared_sample
from helpers import mask_agreement
from rasterio.windows import Window

from geoseg.tiling.tiler import tile


def test_16_bit_panchromatic(tmp_path):
    image = shared_sample("atlanta_pan16", "image.tif")
    labels = shared_sample("atlanta_pan16", "buildings.geojson")
    summary = tile([image], tmp_path / "chips", labels=labels, keep_empty=1.0, max_nodata=1.0)
    assert summary.candidates == summary.written == 16
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    stats = dataset["normalization"]["bands"][0]
    assert dataset["bands"]["dtype"] == "uint16" and stats["p98"] > 255 and stats["min"] >= 54
    with (
        rasterio.open(image) as src,
        rasterio.open(tmp_path / "chips" / "images" / "image_256_512.tif") as chip,
    ):
        assert chip.dtypes[0] == "uint16"
        np.testing.assert_array_equal(chip.read(), src.read(window=Window(512, 256, 256, 256)))
    truth = gpd.read_file(labels).to_crs(dataset["scenes"][0]["crs"]).union_all()
    agreement, labelled = mask_agreement(tmp_path / "chips", truth)
    assert labelled > 0.9 * 900 * 900 and agreement > 0.999
    assert 0.01 < dataset["class_frequencies"]["buildings"] < 0.5


def test_labels_in_another_crs_and_an_alpha_band(tmp_path):
    image = shared_sample("sn7_planet", "image.tif")
    labels = shared_sample("sn7_planet", "buildings.geojson")
    assert gpd.read_file(labels).crs.to_epsg() == 4326
    summary = tile([image], tmp_path / "chips", labels=labels, keep_empty=1.0, max_nodata=1.0)
    assert summary.written == 3 * 3
    truth = gpd.read_file(labels).to_crs("EPSG:3857").union_all()
    agreement, labelled = mask_agreement(tmp_path / "chips", truth)
    assert agreement > 0.995
    with rasterio.open(image) as src:
        valid = src.dataset_mask() > 0
        assert src.dtypes[0] == "int16" and src.count == 4
    assert labelled == int(valid.sum())  # nodata and padding are 255, nothing else
    with rasterio.open(tmp_path / "chips" / "images" / "image_0_0.tif") as chip:
        assert (chip.count, chip.dtypes[0], chip.crs.to_epsg()) == (4, "int16", 3857)


def test_four_band_scene_with_partly_overlapping_labels(tmp_path):
    image = shared_sample("atlanta_rgbnir", "image.tif")
    labels = shared_sample("atlanta_rgbnir", "buildings.geojson")
    summary = tile([image], tmp_path / "chips", labels=labels, keep_empty=0.0, max_nodata=1.0)
    chips = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert 0 < summary.written <= 4 and (chips.positive_buildings > 0).all()
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert dataset["bands"]["count"] == 4 and len(dataset["normalization"]["bands"]) == 4


def test_several_real_scenes_in_one_dataset(tmp_path):
    first = shared_sample("unlabelled", "netherlands_aerial_1000.tif")
    second = shared_sample("unlabelled", "manila_drone_2048.tif")
    summary = tile([first, second], tmp_path / "chips", max_nodata=1.0, workers=2)
    assert summary.written == 4 * 4 + 8 * 8
    chips = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert chips.crs.to_epsg() == 28992 and set(chips["crs"]) == {"EPSG:28992", "EPSG:3395"}


def test_danish_parcels_with_their_outlines_as_lines_give_the_same_chips(tmp_path):
    """The Danish register with every third parcel's outline added as a line feature (a fence
    or ditch layer mixed in, as cadastre layers often are): the polygons stay the field extent
    and every mask is the same as from the polygons alone."""
    import shapely

    folder = shared_sample("denmark_s2_parcels")
    parcels = gpd.read_file(folder / "parcels.shp")[["geometry"]]
    fences = gpd.GeoDataFrame(
        geometry=shapely.boundary(parcels.geometry.to_numpy()[::3]), crs=parcels.crs
    ).explode(index_parts=False)
    mixed = tmp_path / "mixed.gpkg"
    gpd.GeoDataFrame(geometry=[*parcels.geometry, *fences.geometry], crs=parcels.crs).to_file(mixed)
    options = dict(boundary_width="1px", distance=True, size=64, stride=32, workers=1)
    chips = {}
    for name, labels in (("polygons", folder / "parcels.shp"), ("mixed", mixed)):
        summary = tile([str(folder / "image.tif")], str(tmp_path / name), labels=str(labels),
                       **options)  # fmt: skip
        assert summary.targets["parcels" if name == "polygons" else "mixed"]["role"] == "extent"
        chips[name] = sorted((tmp_path / name / "masks").glob("*.tif"))
    assert [p.name for p in chips["polygons"]] == [p.name for p in chips["mixed"]]
    assert len(chips["mixed"]) > 50
    for a, b in zip(chips["polygons"], chips["mixed"]):
        with rasterio.open(a) as first, rasterio.open(b) as second:
            np.testing.assert_array_equal(first.read(), second.read(), err_msg=a.name)
