"""geoseg tile: chip grid, pixels, masks, sampling, split, dataset.json."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from helpers import mask_agreement
from rasterio.windows import Window
from scipy import ndimage

from geoseg.chips import Chip
from geoseg.tiling import tile

ORIGIN_X, ORIGIN_Y, RES = 500_000.0, 5_300_000.0, 0.5


def pixel_box(col0, row0, col1, row1):
    """A box given in pixel coordinates of the default test raster grid."""
    return shapely.box(
        ORIGIN_X + col0 * RES, ORIGIN_Y - row1 * RES, ORIGIN_X + col1 * RES, ORIGIN_Y - row0 * RES
    )


def index(out):
    return gpd.read_file(out / "chips.gpkg")


def test_chip_grid_counts_and_padding_is_not_nodata(make_raster, tmp_path):
    image = make_raster(width=600, height=500)
    # the last column of chips holds 88 of 256 columns: padding is kept, it is not nodata
    summary = tile([image], tmp_path / "all", max_nodata=0.0, val_fraction=0)
    assert (summary.candidates, summary.written, summary.dropped_nodata) == (6, 6, 0)
    overlapping = tile([image], tmp_path / "overlap", stride=128, val_fraction=0)
    assert overlapping.written == 4 * 3
    assert sorted(index(tmp_path / "overlap").col.unique()) == [0, 128, 256, 384]
    tiny = tile([make_raster(width=100, height=70)], tmp_path / "tiny")
    assert (tiny.written, tiny.train) == (1, 1)


def test_chips_equal_source_pixels_and_georeferencing(make_raster, tmp_path):
    image = make_raster(width=300, height=270, count=4, dtype="int16", nodata=-999)
    tile([image], tmp_path / "chips", size=128, stride=96, max_nodata=1.0, val_fraction=0)
    chips = index(tmp_path / "chips")
    assert len(chips) == 3 * 3
    with rasterio.open(image) as src:
        for record in chips.itertuples():
            with rasterio.open(tmp_path / "chips" / record.image) as chip:
                assert (chip.crs, chip.count, chip.dtypes[0]) == (src.crs, 4, "int16")
                assert (chip.width, chip.height, chip.nodata) == (128, 128, -999)
                assert chip.transform == src.transform @ src.transform.translation(
                    record.col, record.row
                )
                data = chip.read()
            window = rasterio.windows.from_bounds(*chip.bounds, transform=src.transform)
            window = window.round_offsets().round_lengths()
            inside = window.intersection(Window(0, 0, src.width, src.height))
            h, w = int(inside.height), int(inside.width)
            np.testing.assert_array_equal(data[:, :h, :w], src.read(window=inside))
            assert (data[:, h:, :] == -999).all() and (data[:, :, w:] == -999).all()


def test_padding_without_nodata_is_masked_in_chip(make_raster, tmp_path):
    image = make_raster(width=200, height=200)
    tile([image], tmp_path / "chips", max_nodata=1.0)
    with rasterio.open(tmp_path / "chips" / "images" / f"{image.stem}_0_0.tif") as chip:
        valid = chip.dataset_mask()
    assert valid[:200, :200].all() and not valid[200:, :].any() and not valid[:, 200:].any()


def test_masks_match_independent_rasterisation_in_other_crs(make_raster, make_vector, tmp_path):
    image = make_raster(width=400, height=300)
    rng = np.random.default_rng(3)
    polygons = [
        shapely.Point(ORIGIN_X + x * RES, ORIGIN_Y - y * RES).buffer(r * RES)
        for x, y, r in zip(rng.uniform(0, 400, 12), rng.uniform(0, 300, 12), rng.uniform(5, 40, 12))
    ]
    wgs84 = gpd.GeoSeries(polygons, crs="EPSG:32633").to_crs("EPSG:4326")
    labels = make_vector(wgs84, crs="EPSG:4326", name="labels.geojson")
    tile([image], tmp_path / "chips", labels=labels, keep_empty=1.0, max_nodata=1.0)
    truth = gpd.read_file(labels).to_crs("EPSG:32633").union_all()
    agreement, labelled = mask_agreement(tmp_path / "chips", truth)
    assert labelled == 400 * 300
    assert agreement > 0.999


def test_one_pixel_boundary_has_no_gaps(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    parcel = shapely.affinity.rotate(pixel_box(40, 50, 210, 190), 23, origin="centroid")
    labels = make_vector([parcel], name="parcels.gpkg")
    tile([image], tmp_path / "chips", labels=labels, boundary_width="1px", val_fraction=0)
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        assert chip.descriptions == ("parcels", "boundary")
        boundary = chip.read(2)
    regions, _ = ndimage.label(boundary == 0, structure=np.ones((3, 3)))  # 8-connected
    assert regions[128, 128] != regions[0, 0]
    assert 0.5 < boundary.sum() / parcel.length * RES < 2.0  # about one pixel wide


def test_boundary_width_in_crs_units(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    labels = make_vector([pixel_box(50, 50, 200, 200)], name="parcels.gpkg")
    tile([image], tmp_path / "chips", labels=labels, boundary_width=3.0, val_fraction=0)
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        boundary = chip.read(2)
    assert boundary[125, 44:58].sum() in (6, 7, 8)  # 3 m = 6 px, plus the touched centre line


def test_line_labels_are_burned_connected(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    line = shapely.LineString([(ORIGIN_X + 5, ORIGIN_Y - 3), (ORIGIN_X + 120, ORIGIN_Y - 97)])
    labels = make_vector([line], name="edges.gpkg")
    tile([image], tmp_path / "chips", labels=labels, val_fraction=0)
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        mask = chip.read(1)
    _, n = ndimage.label(mask)  # 4-connected
    assert n == 1 and mask.sum() >= 230


def test_class_field_and_class_order(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    geoms = [pixel_box(0, 0, 100, 100), pixel_box(100, 100, 200, 200), pixel_box(0, 150, 50, 250)]
    labels = make_vector(geoms, kind=["shed", "house", "pool"])
    tile([image], tmp_path / "all", labels=labels, class_field="kind", val_fraction=0)
    with rasterio.open(tmp_path / "all" / "masks" / f"{image.stem}_0_0.tif") as chip:
        assert chip.descriptions == ("house", "pool", "shed")
    tile(
        [image],
        tmp_path / "some",
        labels=labels,
        class_field="kind",
        classes=["shed", "house"],
        val_fraction=0,
    )
    with rasterio.open(tmp_path / "some" / "masks" / f"{image.stem}_0_0.tif") as chip:
        assert chip.descriptions == ("shed", "house")
        shed, house = chip.read()
    assert shed[:100, :100].all() and shed.sum() == 100 * 100
    assert house[100:200, 100:200].all() and house.sum() == 100 * 100
    dataset = json.loads((tmp_path / "some" / "dataset.json").read_text())
    assert dataset["classes"] == ["shed", "house"]
    assert dataset["class_frequencies"]["shed"] == pytest.approx(10_000 / 256**2)


def test_nodata_is_ignored_in_masks(make_raster, make_vector, tmp_path):
    data = np.full((1, 256, 256), 100, dtype="uint16")
    data[:, :, :64] = 0
    image = make_raster(width=256, height=256, count=1, dtype="uint16", nodata=0, data=data)
    labels = make_vector([pixel_box(0, 0, 256, 128)])
    summary = tile([image], tmp_path / "chips", labels=labels, val_fraction=0)
    assert summary.written == 1
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        mask = chip.read(1)
    assert (mask[:, :64] == 255).all()
    assert (mask[:128, 64:] == 1).all() and (mask[128:, 64:] == 0).all()
    assert index(tmp_path / "chips").nodata_fraction.iloc[0] == pytest.approx(0.25)
    dropped = tile([image], tmp_path / "strict", labels=labels, max_nodata=0.2, val_fraction=0)
    assert dropped.written == 0 and dropped.dropped_nodata == 1


def test_keep_empty_is_seeded_and_independent_of_workers(make_raster, make_vector, tmp_path):
    image = make_raster(width=1024, height=1024, count=1)
    labels = make_vector([pixel_box(0, 0, 200, 200)])
    none = tile([image], tmp_path / "none", labels=labels, keep_empty=0.0)
    assert none.written == 1 and none.dropped_empty == 15
    every = tile([image], tmp_path / "every", labels=labels, keep_empty=1.0)
    assert every.written == 16
    calls = []
    one = tile(
        [image],
        tmp_path / "one",
        labels=labels,
        keep_empty=0.5,
        seed=7,
        workers=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1][0] == calls[-1][1] == len(calls)
    tile([image], tmp_path / "two", labels=labels, keep_empty=0.5, seed=7, workers=2)
    assert 1 < one.written < 16
    assert sorted(index(tmp_path / "one").id) == sorted(index(tmp_path / "two").id)


def test_split_uses_spatial_blocks_without_overlap(make_raster, tmp_path):
    image = make_raster(width=2048, height=2048, count=1)
    summary = tile([image], tmp_path / "chips", stride=128, val_fraction=0.3, seed=1)
    chips = index(tmp_path / "chips")
    val, train = chips[chips.split == "val"], chips[chips.split == "train"]
    assert len(val) and len(train) and summary.dropped_split_buffer > 0
    overlap = shapely.area(
        shapely.intersection(
            shapely.union_all(val.geometry.values), shapely.union_all(train.geometry.values)
        )
    )
    assert overlap == 0
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    block = dataset["sampling"]["split_block_px"]
    blocks = chips.assign(block=chips.row // block * 100 + chips.col // block)
    assert (blocks.groupby("block").split.nunique() == 1).all()


def test_overlapping_scenes_share_their_split(make_raster, tmp_path):
    (tmp_path / "2023").mkdir(), (tmp_path / "2024").mkdir()
    scenes = [
        make_raster(width=1024, height=1024, count=1, name=f"{y}/ortho.tif", seed=y)
        for y in (2023, 2024)
    ]
    tile(scenes, tmp_path / "chips", val_fraction=0.3, max_nodata=1.0)
    chips = index(tmp_path / "chips")
    by_place = chips.groupby(["row", "col"]).split.nunique()
    assert len(by_place) == 16 and (by_place == 1).all()
    assert set(chips.split) == {"train", "val"}


def test_dataset_json_records_16_bit_statistics(make_raster, tmp_path):
    image = make_raster(width=300, height=300, count=2, dtype="uint16")
    tile([image], tmp_path / "chips")
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert dataset["bands"] == {
        "count": 2,
        "dtype": "uint16",
        "nodata": None,
        "descriptions": [None, None],
    }
    stats = dataset["normalization"]["bands"]
    assert len(stats) == 2 and all(s["p98"] > 1000 > s["p2"] for s in stats)
    assert dataset["scenes"][0]["crs"] == "EPSG:32633"
    assert dataset["counts"]["written"] == sum(s["chips"] for s in dataset["scenes"])
    assert not (tmp_path / "chips" / "masks").exists()


def test_scenes_with_the_same_file_name_get_distinct_chips(make_raster, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = make_raster(name="a/image.tif")
    second = make_raster(name="b/image.tif", seed=1)
    summary = tile([first, second], tmp_path / "chips", max_nodata=1.0)
    assert summary.written == 4
    assert set(index(tmp_path / "chips").scene) == {"a-image", "b-image"}


def test_label_raster_is_resampled_with_nearest(make_raster, tmp_path):
    image = make_raster(width=256, height=256)
    codes = np.zeros((1, 64, 64), dtype="uint8")
    codes[0, 8:24, 8:40] = 1
    codes[0, 40:60, 30:50] = 2
    coarse = rasterio.Affine(2.0, 0, ORIGIN_X, 0, -2.0, ORIGIN_Y)  # 4x coarser than the image
    labels = make_raster(
        width=64, height=64, count=1, data=codes, transform=coarse, name="codes.tif"
    )
    tile([image], tmp_path / "chips", labels=labels, classes=["field", "pond"], val_fraction=0)
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        field, pond = chip.read()
    np.testing.assert_array_equal(field, np.kron(codes[0] == 1, np.ones((4, 4))))
    np.testing.assert_array_equal(pond, np.kron(codes[0] == 2, np.ones((4, 4))))


def test_south_up_raster_and_geometry_collections(make_raster, make_vector, tmp_path):
    south_up = rasterio.Affine(0.5, 0, ORIGIN_X, 0, 0.5, ORIGIN_Y)
    image = make_raster(width=256, height=256, transform=south_up)
    edge = shapely.box(ORIGIN_X + 10, ORIGIN_Y, ORIGIN_X + 20, ORIGIN_Y + 0.4)  # row 0 only
    pair = shapely.GeometryCollection(
        [
            shapely.box(ORIGIN_X + 50, ORIGIN_Y + 50, ORIGIN_X + 55, ORIGIN_Y + 55),
            shapely.box(ORIGIN_X + 70, ORIGIN_Y + 50, ORIGIN_X + 75, ORIGIN_Y + 55),
        ]
    )
    labels = make_vector([edge, pair], name="labels.geojson")
    tile([image], tmp_path / "chips", labels=labels, val_fraction=0)
    with rasterio.open(tmp_path / "chips" / "masks" / f"{image.stem}_0_0.tif") as chip:
        mask = chip.read(1)
    assert mask[0].sum() == 20 and mask[1:].sum() == 2 * 10 * 10


def test_chip_ids_name_scene_row_and_col():
    assert Chip("scene", 256, 512, "train", 0.3).id == "scene_256_512"
