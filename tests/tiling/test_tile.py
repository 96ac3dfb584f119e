"""geoseg tile: chip grid, pixels, masks, sampling, split, dataset.json."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from conftest import shared_sample
from helpers import assert_one_line_error, mask_agreement, run
from rasterio.enums import ColorInterp, Compression
from rasterio.windows import Window
from scipy import ndimage

import geoseg.tiling.chips
import geoseg.tiling.tiler
from geoseg.errors import LabelsError, ParameterError, RasterError
from geoseg.io.raster import read_padded, sample_valid_pixels
from geoseg.tiling.chip_files import UnexpectedLayout
from geoseg.tiling.chips import CODECS, Chip
from geoseg.tiling.tiler import tile
from geoseg.training.dataset import read_chip

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
    # a raster smaller than a chip gives one padded chip (--size 256, more than the 128 px this
    # raster needs, is refused: test_chip_size_larger_than_every_raster_is_refused)
    tiny = tile([make_raster(width=100, height=70)], tmp_path / "tiny", size=128)
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
    tile([image], tmp_path / "chips", size=224, max_nodata=1.0)
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


def test_sparse_labels_keep_no_chip_without_a_labelled_pixel(make_raster, make_vector, tmp_path):
    """Beyond the reach of every drawn field nothing is known: such chips are never kept, even
    with keep_empty 1; chips near the field keep it, its ring, and ignore the rest."""
    image = make_raster(width=1024, height=1024, count=1)
    labels = make_vector([pixel_box(0, 0, 200, 200)])
    summary = tile([image], tmp_path / "c", labels=labels, keep_empty=1.0, sparse_labels="3px")
    assert summary.written == 1 and summary.dropped_empty == 15
    record = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert record["labels"]["sparse_reach"] == "3px"
    (mask,) = (tmp_path / "c" / "masks").iterdir()
    with rasterio.open(mask) as src:
        values = set(np.unique(src.read(1)).tolist())
    assert values == {0, 1, 255}


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
    assert len(val) and len(train) and summary.spare == (chips.split == "spare").sum() > 0
    overlap = shapely.area(
        shapely.intersection(
            shapely.union_all(val.geometry.values), shapely.union_all(train.geometry.values)
        )
    )
    assert overlap == 0
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    block = dataset["sampling"]["split_block_px"]
    blocks = chips[chips.split != "spare"]
    blocks = blocks.assign(block=blocks.row // block * 100 + blocks.col // block)
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


# --- label rasters with nodata 0, images the labels do not cover ---------------------------


def building_mask(make_raster, nodata):
    """A 0/1 building mask on the test grid, 1 in a quarter of the pixels."""
    codes = np.zeros((1, 256, 256), dtype="uint8")
    codes[0, :128, :128] = 1
    return make_raster(width=256, height=256, count=1, data=codes, nodata=nodata, name="mask.tif")


def test_label_raster_with_nodata_0_warns_and_label_nodata_none_keeps_background(
    make_raster, tmp_path
):
    image = make_raster(width=256, height=256)
    labels = building_mask(make_raster, nodata=0)
    own = tile([image], tmp_path / "own", labels=labels, val_fraction=0)
    assert own.class_frequencies == {"class_1": 1.0}  # the background is read as nodata
    assert len(own.warnings) == 1 and "`label_nodata` none" in own.warnings[0]
    assert "warning: class 'class_1' is positive on 100.0%" in own.describe()

    none = tile([image], tmp_path / "none", labels=labels, label_nodata="none", val_fraction=0)
    assert none.class_frequencies == {"class_1": pytest.approx(0.25)} and not none.warnings
    with rasterio.open(tmp_path / "none" / "masks" / f"{image.stem}_0_0.tif") as chip:
        mask = chip.read(1)
    assert (mask[:128, :128] == 1).all() and (mask[128:] == 0).all() and (mask[:, 128:] == 0).all()
    dataset = json.loads((tmp_path / "none" / "dataset.json").read_text())
    assert dataset["labels"]["nodata"] is None and dataset["class_frequencies"]["class_1"] == 0.25

    # an explicit value: 1 becomes the ignored value, and 0 is then no class at all
    with pytest.raises(LabelsError, match="no non-zero class codes"):
        tile([image], tmp_path / "one", labels=labels, label_nodata=1)


def test_label_nodata_needs_a_label_raster(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    labels = make_vector([pixel_box(0, 0, 100, 100)])
    with pytest.raises(ParameterError, match="label raster"):
        tile([image], tmp_path / "a", labels=labels, label_nodata="none")
    with pytest.raises(ParameterError, match="need `labels`"):
        tile([image], tmp_path / "b", label_nodata=0)
    with pytest.raises(ParameterError, match="a number or 'none'"):
        tile([image], tmp_path / "c", labels=building_mask(make_raster, 0), label_nodata="zero")


def test_cli_label_nodata_none(make_raster, tmp_path):
    image = make_raster(width=256, height=256)
    labels = building_mask(make_raster, nodata=0)
    result = run(
        "tile", image, "--labels", labels, "--label-nodata", "none", "--out", tmp_path / "c"
    )
    assert result.exit_code == 0, result.output
    assert "class_1 25.0%" in result.output and "warning" not in result.output


@pytest.mark.parametrize("kind", ["vector", "raster"])
def test_images_the_labels_do_not_cover_are_dropped_and_reported(
    make_raster, make_vector, tmp_path, kind
):
    covered = make_raster(width=256, height=256, name="covered.tif")
    far = rasterio.Affine(RES, 0, ORIGIN_X + 10_000, 0, -RES, ORIGIN_Y)
    elsewhere = make_raster(width=512, height=256, transform=far, name="elsewhere.tif")
    if kind == "vector":
        labels = make_vector([pixel_box(0, 0, 100, 100)])
    else:
        labels = building_mask(make_raster, nodata=None)
    summary = tile([covered, elsewhere], tmp_path / "chips", labels=labels, val_fraction=0)
    assert (summary.candidates, summary.written, summary.dropped_unlabelled) == (3, 1, 2)
    assert set(index(tmp_path / "chips").scene) == {"covered"}
    assert any("do not cover elsewhere" in w and "2 chips" in w for w in summary.warnings)
    assert "2 in images without labels" in summary.describe()
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert dataset["counts"]["dropped_unlabelled"] == 2
    assert dataset["counts"]["candidates"] == sum(
        dataset["counts"][k]
        for k in ("written", "dropped_nodata", "dropped_empty", "dropped_unlabelled")
    )


# --- one-line errors: chip size, memory, truncated files ------------------------------------


def test_chip_size_larger_than_every_raster_is_refused(make_raster, tmp_path):
    small, large = make_raster(width=300, height=200), make_raster(width=250, height=260)
    result = run("tile", small, large, "--size", "100000", "--out", tmp_path / "chips")
    assert_one_line_error(result, "--size 100000", "largest side is 300 px", small.name, "320")
    assert not (tmp_path / "chips").exists()
    assert run("tile", small, large, "--size", "320", "--out", tmp_path / "ok").exit_code == 0


def test_running_out_of_memory_is_one_line(make_raster, tmp_path, monkeypatch):
    image = make_raster(width=300, height=200)

    def huge(*args, **kwargs):
        raise MemoryError("Unable to allocate 27.9 GiB for an array with shape (3, 1e5, 1e5)")

    monkeypatch.setattr(geoseg.tiling.tiler, "cut_chips", huge)
    result = run("tile", image, "--out", tmp_path / "chips")
    assert_one_line_error(result, "out of memory", "27.9 GiB", "smaller --size")
    with pytest.raises(MemoryError):  # a ResourceError is also a MemoryError for callers
        tile([image], tmp_path / "lib")


def truncated_raster(make_raster, tmp_path):
    """A tiled, compressed GeoTIFF whose header is intact but whose pixel data is cut short."""
    image = make_raster(width=300, height=300, name="source.tif")
    cut = tmp_path / "truncated.tif"
    with rasterio.open(image) as src:
        profile = src.profile | {"compress": "deflate"}
        with rasterio.open(cut, "w", **profile) as dst:
            dst.write(src.read())
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_geotiff_names_the_file_and_gdal_reason(make_raster, tmp_path):
    image = truncated_raster(make_raster, tmp_path)
    with rasterio.open(image) as src:  # the header is fine: only reading pixels fails
        assert src.width == 300
        with pytest.raises(RasterError, match=r"truncated\.tif: cannot read pixels \(.*TIFF"):
            read_padded(src, Window(0, 0, 300, 300))
    with pytest.raises(RasterError, match="cannot read pixels"):
        sample_valid_pixels(str(image))
    result = run("tile", image, "--out", tmp_path / "chips")
    assert_one_line_error(result, str(image), "cannot read pixels (", "bytes")
    assert not (tmp_path / "chips").exists()


# --- the split: fractions of chips, scenes, real overlap, test ------------------------------


def nine_scenes(make_raster, make_vector, side=256):
    """Nine separate ``side`` px scenes 1 km apart, each covered by fields (every chip positive)."""
    images, fields = [], []
    for k in range(9):
        x0, y0 = ORIGIN_X + 1000.0 * k, ORIGIN_Y
        t = rasterio.Affine(RES, 0, x0, 0, -RES, y0)
        images.append(make_raster(width=side, height=side, transform=t, name=f"patch_{k}.tif"))
        step = side * RES / 4
        fields += [
            shapely.box(
                x0 + i * step + 1,
                y0 - (j + 1) * step + 1,
                x0 + (i + 1) * step - 1,
                y0 - j * step - 1,
            )
            for i in range(4)
            for j in range(4)
        ]
    return images, make_vector(fields, name="fields.gpkg")


def test_nine_small_scenes_are_split_by_scene_at_the_asked_fraction(
    make_raster, make_vector, tmp_path
):
    images, fields = nine_scenes(make_raster, make_vector)
    summary = tile(images, tmp_path / "chips", labels=fields, size=128, stride=64, val_fraction=0.2)
    chips = index(tmp_path / "chips")
    assert summary.candidates == 81 and len(chips) == 81  # none dropped at split borders
    assert (chips.split == "val").mean() == pytest.approx(0.2, abs=0.06)  # 2 scenes of 9: 22%
    assert (chips.groupby("scene").split.nunique() == 1).all()
    assert summary.split_by == "scene" and summary.val_fraction_reached == 2 / 9
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert dataset["sampling"]["split_by"] == "scene"
    assert dataset["sampling"]["val_fraction_reached"] == pytest.approx(summary.val / 81, abs=1e-6)
    blocks = tile(
        images, tmp_path / "blocks", labels=fields, size=128, stride=64, split_by="blocks"
    )
    assert blocks.split_by == "blocks" and blocks.spare > 0


def test_nine_real_sentinel2_patches_keep_their_chips(tmp_path):
    """The issue's case at half scale: nine 128 px patches of the Danish scene, 64 px chips."""
    source = shared_sample("denmark_s2_parcels", "image.tif")
    parcels = shared_sample("denmark_s2_parcels", "parcels.shp")
    patches = []
    with rasterio.open(source) as src:
        for row in (0, 140, 280):
            for col in (0, 150, 300):
                window = Window(col, row, 128, 128)
                profile = src.profile | {
                    "width": 128,
                    "height": 128,
                    "transform": src.window_transform(window),
                }
                patches.append(tmp_path / f"patch_{row}_{col}.tif")
                with rasterio.open(patches[-1], "w", **profile) as dst:
                    dst.write(src.read(window=window))
    summary = tile(
        patches, tmp_path / "chips", labels=parcels, size=64, stride=32, val_fraction=0.2
    )
    chips = index(tmp_path / "chips")
    assert summary.candidates == 81 and len(chips) >= 0.9 * 81
    assert (chips.split == "val").mean() == pytest.approx(0.2, abs=0.06)
    assert summary.spare == 0 and summary.split_by == "scene"
    with pytest.raises(LabelsError, match="'GB' holds float64 values"):
        tile(patches, tmp_path / "gb", labels=parcels, class_field="GB", size=64)


def test_blocks_are_chosen_for_the_fraction_of_chips_not_of_blocks(
    make_raster, make_vector, tmp_path
):
    """Labels on a fifth of the scene: most blocks keep no chip, so counting blocks misleads."""
    image = make_raster(width=2048, height=2048, count=1)
    labels = make_vector([pixel_box(0, 0, 2048, 400)])
    for seed in range(3):
        summary = tile(
            [image],
            tmp_path / f"s{seed}",
            labels=labels,
            keep_empty=0,
            seed=seed,
            val_fraction=0.25,
        )
        chips = index(tmp_path / f"s{seed}")
        assert summary.written == len(chips) == 16
        assert (chips.split == "val").mean() == pytest.approx(0.25, abs=0.07), seed
        assert summary.split_by == "blocks" and summary.val_fraction_reached == 4 / 16


def test_chips_are_kept_aside_only_where_they_share_pixels_across_splits(make_raster, tmp_path):
    """Two overlapping scenes, the second shifted by 100 px: chips at block borders overlap
    chips of the other scene in the neighbouring block."""
    shifted = rasterio.Affine(RES, 0, ORIGIN_X + 100 * RES, 0, -RES, ORIGIN_Y - 60 * RES)
    scenes = [
        make_raster(width=2048, height=2048, count=1, name="a.tif"),
        make_raster(width=2048, height=2048, count=1, transform=shifted, name="b.tif"),
    ]
    summary = tile(scenes, tmp_path / "chips", max_nodata=1.0, val_fraction=0.3, seed=2)
    chips = index(tmp_path / "chips")
    val, train = chips[chips.split == "val"], chips[chips.split == "train"]
    shared = shapely.intersection(
        shapely.union_all(val.geometry.values), shapely.union_all(train.geometry.values)
    )
    assert shapely.area(shared) == 0
    assert 0 < summary.spare < 0.2 * summary.candidates
    assert summary.written == summary.candidates  # spare chips are written too
    spare = chips.split == "spare"
    assert (chips.split[~spare] == "val").mean() == pytest.approx(0.3, abs=0.05)
    # every spare chip shares pixels with a val chip
    grid = [(s, r, c) for s in ("a", "b") for r in range(0, 2048, 256) for c in range(0, 2048, 256)]
    written = set(zip(chips.scene[~spare], chips.row[~spare], chips.col[~spare]))
    transforms = {"a": rasterio.Affine(RES, 0, ORIGIN_X, 0, -RES, ORIGIN_Y), "b": shifted}
    val_union = shapely.union_all(val.geometry.values)
    for scene, row, col in grid:
        if (scene, row, col) not in written:
            t = transforms[scene]
            x0, y0 = t @ (col, row)
            x1, y1 = t @ (col + 256, row + 256)
            box = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            assert shapely.area(shapely.intersection(box, val_union)) > 0


def test_test_split_shares_no_pixel_with_train_or_val(make_raster, tmp_path):
    image = make_raster(width=2048, height=2048, count=1)
    summary = tile(
        [image], tmp_path / "chips", stride=128, val_fraction=0.2, test_fraction=0.1, seed=4
    )
    chips = index(tmp_path / "chips")
    assert set(chips.split) == {"train", "val", "test", "spare"}
    assert (
        summary.test == (chips.split == "test").sum()
        and summary.train + summary.val + summary.test + summary.spare == summary.written
    )
    unions = {
        s: shapely.union_all(chips[chips.split == s].geometry.values)
        for s in ("train", "val", "test")
    }
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert shapely.area(shapely.intersection(unions[a], unions[b])) == 0, (a, b)
    assert summary.val_fraction_reached == pytest.approx(0.2, abs=0.05)
    assert summary.test_fraction_reached == pytest.approx(0.1, abs=0.05)
    dataset = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    sampling = dataset["sampling"]
    assert (sampling["val_fraction"], sampling["test_fraction"]) == (0.2, 0.1)
    assert sampling["test_fraction_reached"] == pytest.approx(
        summary.test / (summary.written - summary.spare), abs=1e-6
    )
    assert dataset["counts"]["test"] == summary.test
    assert f"{summary.test} test" in summary.describe()
    with pytest.raises(ParameterError, match="together must not exceed 1"):
        tile([image], tmp_path / "bad", val_fraction=0.6, test_fraction=0.5)


def test_test_split_by_scene_holds_out_whole_scenes(make_raster, make_vector, tmp_path):
    images, fields = nine_scenes(make_raster, make_vector)
    summary = tile(
        images, tmp_path / "chips", labels=fields, size=128, val_fraction=0.2, test_fraction=0.1
    )
    chips = index(tmp_path / "chips")
    per_scene = chips.groupby("scene").split.agg(set)
    assert (per_scene.map(len) == 1).all()
    assert sum(s == {"test"} for s in per_scene) == 1 and sum(s == {"val"} for s in per_scene) == 2
    assert summary.test == 4 and summary.val == 8


def test_tiling_logs_its_plan_timings_and_blocks(make_raster, tmp_path, caplog):
    image = make_raster(width=600, height=500)
    with caplog.at_level(logging.DEBUG, logger="geoseg"):
        tile([image], tmp_path / "chips", size=128)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("plan: 1 scenes, 20 candidate chips") and "blocks of" in m for m in messages
    )
    assert any(m.startswith("cut 20 chips in") and m.endswith(" s") for m in messages)
    assert any(m.startswith("split by blocks") for m in messages)
    assert any("block at row" in m for m in messages if "chips kept" in m)
    assert all(r.levelno < logging.WARNING for r in caplog.records)


def distance_at_map_pixels(out):
    """The ``distance`` band of every chip placed on the raster's grid (row, col -> value)."""
    values = {}
    for record in index(out).itertuples():
        with rasterio.open(out / record.mask) as chip:
            band = chip.read(chip.descriptions.index("distance") + 1)
        rows, cols = np.nonzero(band != 255)
        for r, c, v in zip(rows + record.row, cols + record.col, band[rows, cols]):
            values.setdefault((int(r), int(c)), set()).add(int(v))
    return values


def test_distance_does_not_depend_on_chips_or_blocks(make_raster, make_vector, tmp_path):
    """Two chip grids (and so two block groupings) give the same distance at every map pixel;
    a parcel cut by chip edges keeps its whole-parcel normalisation."""
    image = make_raster(width=320, height=288)
    rng = np.random.default_rng(4)
    xs, ys, radii = rng.uniform(175, 300, 10), rng.uniform(20, 270, 10), rng.uniform(8, 20, 10)
    blobs = [  # some overlap, none meets the box
        shapely.Point(ORIGIN_X + x * RES, ORIGIN_Y - y * RES).buffer(r * RES, quad_segs=12)
        for x, y, r in zip(xs, ys, radii)
    ]
    big = pixel_box(40, 30, 150, 170)  # cut by the edges of 64 px chips at 64 and 128
    labels = make_vector([big, *blobs], name="parcels.gpkg")
    settings = dict(labels=labels, distance=True, keep_empty=1.0, max_nodata=1.0, val_fraction=0)
    tile([image], tmp_path / "a", size=64, **settings)
    tile([image], tmp_path / "b", size=96, stride=80, workers=1, **settings)
    a, b = distance_at_map_pixels(tmp_path / "a"), distance_at_map_pixels(tmp_path / "b")
    assert all(len(v) == 1 for v in b.values())  # overlapping chips agree
    assert len(a) == 320 * 288 and set(b) == set(a) and all(a[k] == b[k] for k in a)
    # the box is 110 x 140 px: its largest pixel distance is 54.5 px, whichever chip holds it
    assert a[(100, 95)] == {254} and a[(64, 64)] == {round(254 * 24.5 / 54.5)}
    assert a[(30, 90)] == {round(254 * 0.5 / 54.5)} and a[(5, 5)] == {0}


def test_dataset_json_records_targets_and_distance_mean(make_raster, make_vector, tmp_path):
    image = make_raster(width=256, height=256)
    labels = make_vector([pixel_box(20, 20, 120, 120), pixel_box(150, 150, 250, 200)])
    summary = tile(
        [image], tmp_path / "c", labels=labels, boundary_width="1px", distance=True, size=64
    )
    record = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert record["classes"] == ["labels", "boundary", "distance"]
    assert record["targets"] == {
        "labels": {"kind": "class", "role": "extent"},
        "boundary": {"kind": "class", "role": "boundary"},
        "distance": {"kind": "regression", "role": "distance"},
    }
    assert geoseg.contracts.DatasetRecord.read(tmp_path / "c").roles["distance"] == "distance"
    kept = index(tmp_path / "c")
    with rasterio.open(tmp_path / "c" / kept["mask"][0]) as chip:
        assert chip.descriptions == ("labels", "boundary", "distance")
    stored = np.concatenate(
        [rasterio.open(tmp_path / "c" / m).read(3).ravel() for m in kept["mask"]]
    )
    mean = record["class_frequencies"]["distance"]
    assert 0 < mean < 1 and mean == pytest.approx(stored[stored != 255].mean() / 254)
    assert "mean_distance" in kept.columns and "positive_distance" not in kept.columns
    assert "mean distance" in summary.describe()
    assert record["labels"]["distance"] is True
    # "empty" chips are those without a positive pixel of any class (the 8 without a parcel)
    none_empty = tile(
        [image], tmp_path / "d", labels=labels, distance=True, size=64, keep_empty=0.0
    )
    assert (none_empty.written, none_empty.dropped_empty) == (8, 8)
    assert (index(tmp_path / "d").positive_labels > 0).all()


# --- chip codecs: --compress, the stacked writer's fallback ---------------------------------


def read_chips(out):
    """Per chip id: its image pixels, validity and (with labels) mask, read as training does."""
    chips = {}
    for record in index(out).itertuples():
        mask = out / (record.mask or record.image)
        chips[record.id] = read_chip(str(out / record.image), str(mask), [0])
    return chips


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_the_chips_and_is_recorded(
    make_raster, make_vector, tmp_path, codec
):
    image = make_raster(width=300, height=270, count=4, dtype="int16", nodata=-999)
    labels = make_vector([pixel_box(20, 30, 200, 150)])
    options = dict(labels=labels, boundary_width="1px", size=128, max_nodata=1.0, val_fraction=0)
    tile([image], tmp_path / "chips", compress=codec, keep_empty=1.0, **options)
    record = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert record["compress"] == codec
    for folder in ("images", "masks"):
        for path in (tmp_path / "chips" / folder).iterdir():
            with rasterio.open(path) as chip:
                assert chip.compression == (None if codec == "none" else Compression[codec])
    with rasterio.open(image) as src:
        for record in index(tmp_path / "chips").itertuples():
            with rasterio.open(tmp_path / "chips" / record.image) as chip:
                assert chip.transform == src.transform @ src.transform.translation(
                    record.col, record.row
                )
                window = Window(record.col, record.row, 128, 128)
                np.testing.assert_array_equal(chip.read(), read_padded(src, window)[0])
    reference = tmp_path / "reference"
    tile([image], reference, compress="none", keep_empty=1.0, **options)
    ours, theirs = read_chips(tmp_path / "chips"), read_chips(reference)
    assert ours.keys() == theirs.keys()
    for chip_id, arrays in ours.items():
        for mine, expected in zip(arrays, theirs[chip_id]):
            np.testing.assert_array_equal(mine, expected)


def test_cli_compress_option_and_codecs_gdal_cannot_write(make_raster, tmp_path, monkeypatch):
    image = make_raster(width=256, height=256)
    assert run("tile", image, "--compress", "lzw", "--out", tmp_path / "lzw").exit_code == 0
    assert json.loads((tmp_path / "lzw" / "dataset.json").read_text())["compress"] == "lzw"
    result = run("tile", image, "--compress", "jpeg", "--out", tmp_path / "jpeg")
    assert_one_line_error(result, "--compress", "jpeg")
    with pytest.raises(ParameterError, match="`compress` must be one of zstd, deflate, lzw"):
        tile([image], tmp_path / "lib", compress="jpeg")
    monkeypatch.setattr(
        geoseg.tiling.chips, "gdal_writes", lambda options: options.get("compress") != "zstd"
    )
    result = run("tile", image, "--out", tmp_path / "zstd")
    assert_one_line_error(
        result, "--compress zstd", "cannot write ZSTD", "choose one of deflate, lzw, none"
    )
    assert not (tmp_path / "zstd").exists()


def test_gdal_writes_tells_which_creation_options_gdal_refuses():
    assert all(
        geoseg.tiling.chips.gdal_writes(geoseg.tiling.chips.CODEC_OPTIONS[c]) for c in CODECS
    )
    assert not geoseg.tiling.chips.gdal_writes({"tiled": True, "blockxsize": 8, "blockysize": 8})


@pytest.mark.parametrize("way", ["one by one", "in groups of one"])
def test_chips_written_apart_equal_chips_written_together(make_raster, tmp_path, monkeypatch, way):
    image = make_raster(width=300, height=200)  # the chips of the last column need a mask
    tile([image], tmp_path / "together", max_nodata=1.0)

    def refuse(*args, **kwargs):
        raise UnexpectedLayout("a layout from another GDAL")

    if way == "one by one":  # GDAL's file could not be split: every chip by its own GDAL file
        monkeypatch.setattr(geoseg.tiling.chips, "write_stacked", refuse)
    else:
        monkeypatch.setattr(geoseg.tiling.chips, "STACK_BYTES", 1)
    tile([image], tmp_path / "apart", max_nodata=1.0)
    names = sorted(p.name for p in (tmp_path / "together" / "images").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "apart" / "images").iterdir())
    for name in names:
        with (
            rasterio.open(tmp_path / "together" / "images" / name) as a,
            rasterio.open(tmp_path / "apart" / "images" / name) as b,
        ):
            assert a.profile == b.profile and a.mask_flag_enums == b.mask_flag_enums
            np.testing.assert_array_equal(a.read(), b.read())
            np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())


@pytest.mark.parametrize("kind", ["all valid", "nodata", "internal mask", "alpha"])
def test_read_padded_validity_matches_gdal_mask(make_raster, tmp_path, kind):
    data = np.random.default_rng(1).integers(1, 255, (4, 120, 90), dtype=np.uint8)
    data[:, 10:30, 20:50] = 0
    path = tmp_path / f"{kind}.tif".replace(" ", "_")
    count = 4 if kind == "alpha" else 3
    profile = dict(
        driver="GTiff",
        width=90,
        height=120,
        count=count,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500_000.0, 0, -0.5, 5_300_000.0),
        nodata=0 if kind == "nodata" else None,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:count])
        if kind == "alpha":
            dst.colorinterp = [
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            ]
        if kind == "internal mask":
            dst.write_mask(data[0] > 0)
    window = Window(-8, -8, 100, 100)
    with rasterio.open(path) as src:
        _, valid, inside = read_padded(src, window)
        expected = np.zeros_like(valid)
        expected[8:, 8:98] = src.dataset_mask(window=Window(0, 0, 90, 92)) > 0
    np.testing.assert_array_equal(valid, expected)
    assert valid[inside].all() == (kind == "all valid")
