"""``geoseg search`` against a STAC API served on 127.0.0.1 by the tests, with COG assets read
by HTTP ranges: the VRTs hold the catalogue's pixels in the bbox, mosaics have no seam, every
bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import assert_one_line_error, run
from pyproj import Transformer
from range_server import RangeServer

from geoseg.catalog.mosaic import asset_path
from geoseg.catalog.request import parse_bbox, parse_window
from geoseg.errors import ParameterError

ASSETS = ("red", "green", "blue")
SIZE = 384  # the scene, px; two tiles of 256 px overlap over 128 px
BBOX = (500_010.0, 5_299_830.0, 500_180.0, 5_299_990.0)  # inside the scene, EPSG:32633


def footprint(transform, width: int, height: int) -> tuple[dict, list[float]]:
    """A tile's footprint in longitude and latitude, as a STAC item holds it."""
    left, top = transform.c, transform.f
    right, bottom = left + width * transform.a, top + height * transform.e
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    west, south, east, north = to_wgs84.transform_bounds(left, bottom, right, top)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}, [west, south, east, north]


def write_tile(
    folder: Path, name: str, data: np.ndarray, transform, offset: float = 0.0, crs="EPSG:32633"
) -> dict:
    """One single-band COG per asset; the item's assets (``raster:bands`` with ``offset``)."""
    assets = {}
    for band, asset in enumerate(ASSETS):
        path = folder / f"{name}_{asset}.tif"
        profile = dict(driver="COG", width=data.shape[2], height=data.shape[1], count=1,
                       dtype="uint8", crs=crs, transform=transform,
                       blocksize=128)  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data[band], 1)
        assets[asset] = {"href": f"{{base}}/{path.name}", "type": "image/tiff",
                         "raster:bands": [{"data_type": "uint8", "offset": offset}]}  # fmt: skip
    return assets


def item(name, when, cloud, assets, geometry, bbox, epsg=32633) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": name, "collection": "s2",
        "geometry": geometry, "bbox": bbox,
        "properties": {"datetime": f"{when}T10:00:00Z", "eo:cloud_cover": cloud,
                       **({"proj:epsg": epsg} if epsg else {})},
        "assets": assets, "links": [],
    }  # fmt: skip


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """May: tiles A (least cloudy, the scene's west) and B (the east, values inverted so that
    the mosaic shows which is on top). July: A too cloudy, the whole scene in one item, and a
    clearer item in another UTM zone that is left out."""
    from geoseg import synth

    root = tmp_path_factory.mktemp("stac")
    synth(str(root / "scene"), size=SIZE, seed=3, buildings=False)
    with rasterio.open(root / "scene" / "image.tif") as src:
        scene, transform = src.read(), src.transform
    server = RangeServer(tmp_path_factory.mktemp("served"), script="stac_server.py")
    files = server.root
    west = transform
    east = transform @ transform.translation(128, 0)
    a = write_tile(files, "a", scene[:, :, :256], west)
    b = write_tile(files, "b", 255 - scene[:, :, 128:], east)
    whole = write_tile(files, "whole", scene, transform)
    a_new = write_tile(files, "a-new", scene[:, :, :256], west, offset=-20.0)
    b_old = write_tile(files, "b-old", scene[:, :, 128:] // 2, east)
    b_utm32 = write_tile(files, "b-utm32", scene[:, :, 128:], east, crs="EPSG:32632")
    geo_a, box_a = footprint(west, 256, SIZE)
    geo_b, box_b = footprint(east, 256, SIZE)
    geo_all, box_all = footprint(transform, SIZE, SIZE)
    items = [
        item("b-may", "2024-05-20", 12.0, b, geo_b, box_b),
        item("a-may", "2024-05-10", 5.0, a, geo_a, box_a),
        item("a-july", "2024-07-10", 40.0, a, geo_a, box_a),
        item("whole-july", "2024-07-15", 2.0, whole, geo_all, box_all),
        item("utm32-july", "2024-07-20", 1.0, whole, geo_all, box_all, epsg=32632),
        item("a-september", "2024-09-10", 1.0, a_new, geo_a, box_a),
        item("b-september", "2024-09-12", 3.0, b_old, geo_b, box_b),
        item("a-october", "2024-10-10", 1.0, a, geo_a, box_a),
        item("b-october", "2024-10-12", 2.0, b_utm32, geo_b, box_b, epsg=None),
    ]
    (files / "catalogue.json").write_text(json.dumps(items))
    yield server, scene, transform
    server.close()


def search_args(server, out, *extra, dates=("2024-05-01/2024-05-31", "2024-07-01/2024-07-31")):
    args = ["search", "--stac", server.url(""), "--collection", "s2", "--bbox",
            ",".join(map(str, BBOX)), "--bbox-crs", "EPSG:32633", "--assets", ",".join(ASSETS),
            "--max-cloud", "20", "--out", out]  # fmt: skip
    for window in dates:
        args += ["--dates", window]
    return [*args, *extra]


@pytest.fixture(scope="module")
def scenes(catalogue, tmp_path_factory):
    server, _, _ = catalogue
    out = tmp_path_factory.mktemp("search") / "scenes"
    result = run(*search_args(server, out))
    assert result.exit_code == 0, result.output
    return out, result.output


def bbox_window(transform):
    col0, row0 = ~transform @ (BBOX[0], BBOX[3])
    col1, row1 = ~transform @ (BBOX[2], BBOX[1])
    return slice(round(row0), round(row1)), slice(round(col0), round(col1))


def test_each_window_is_a_vrt_of_the_catalogues_pixels_in_the_bbox(catalogue, scenes):
    server, scene, transform = catalogue
    out, output = scenes
    rows, cols = bbox_window(transform)
    expected_july = scene[:, rows, cols]
    mosaic = np.concatenate([scene[:, :, :256], 255 - scene[:, :, 256:]], axis=2)
    expected_may = mosaic[:, rows, cols]
    for name, expected in (("2024-05-01_2024-05-31", expected_may),
                           ("2024-07-01_2024-07-31", expected_july)):  # fmt: skip
        with rasterio.open(out / f"{name}.vrt") as src:
            assert src.descriptions == ASSETS
            assert src.crs == "EPSG:32633"
            assert src.bounds == pytest.approx(BBOX)
            assert src.shape == expected.shape[1:]
            np.testing.assert_array_equal(src.read(), expected)
        assert "/vsicurl/http://127.0.0.1" in (out / f"{name}.vrt").read_text()
    assert "2024-05-01/2024-05-31: 2 item(s) (cloud 5.0 %, 12.0 %), 100 % of the bbox" in output


def test_two_items_mosaic_without_a_seam_the_least_cloudy_on_top(catalogue, scenes):
    """Across the overlap of A and B, every pixel is A's (5 % cloud), then B's beyond A."""
    server, scene, transform = catalogue
    out, _ = scenes
    rows, cols = bbox_window(transform)
    with rasterio.open(out / "2024-05-01_2024-05-31.vrt") as src:
        red = src.read(1)
    seam = 256 - cols.start  # the first column A does not reach
    np.testing.assert_array_equal(red[:, :seam], scene[0, rows, cols.start : 256])
    np.testing.assert_array_equal(red[:, seam:], 255 - scene[0, rows, 256 : cols.stop])


def test_an_item_with_another_offset_is_converted_to_the_top_items_values(catalogue, tmp_path):
    """The top item's values are x - 20 in reflectance terms; the other item's x: its pixels
    are written as x + 20, so the mosaic holds one radiometry."""
    server, scene, transform = catalogue
    out = tmp_path / "scenes"
    assert run(*search_args(server, out, dates=["2024-09-01/2024-09-30"])).exit_code == 0
    rows, cols = bbox_window(transform)
    with rasterio.open(out / "2024-09-01_2024-09-30.vrt") as src:
        red = src.read(1)
        assert src.offsets == (-20.0,) * 3 and src.scales == (1.0,) * 3
    seam = 256 - cols.start
    np.testing.assert_array_equal(red[:, :seam], scene[0, rows, cols.start : 256])
    np.testing.assert_array_equal(red[:, seam:], scene[0, rows, 256 : cols.stop] // 2 + 20)


def test_an_item_of_another_crs_without_projection_metadata_is_one_line(catalogue, tmp_path):
    server, _, _ = catalogue
    result = run(*search_args(server, tmp_path / "s", dates=["2024-10-01/2024-10-31"]))
    assert_one_line_error(result, "item b-october is in EPSG:32632", "no proj:code")
    assert not (tmp_path / "s").exists()


def test_items_json_records_the_chosen_items_and_those_left_out(scenes):
    out, _ = scenes
    record = json.loads((out / "items.json").read_text())
    may, july = record["windows"]
    assert [i["id"] for i in may["items"]] == ["a-may", "b-may"]
    assert [i["id"] for i in july["items"]] == ["whole-july"]
    assert july["left_out"] == [{"id": "utm32-july", "why": "in EPSG:32632"}]
    assert may["items"][0]["cloud_cover"] == 5.0 and may["coverage"] == 1.0
    assert may["items"][0]["hrefs"]["red"].endswith("/a_red.tif")
    assert record["crs"] == "EPSG:32633"


def test_predict_reads_the_windows_as_dates_of_one_place(scenes, tiny_model, tmp_path):
    out, _ = scenes
    vrts = sorted(out.glob("*.vrt"))
    pred = tmp_path / "pred.tif"
    result = run("predict", *vrts, "--dates", "--model", tiny_model, "--out", pred)
    assert result.exit_code == 0, result.output
    with rasterio.open(pred) as src, rasterio.open(vrts[0]) as first:
        assert src.shape == first.shape and src.transform == first.transform
        assert src.read().any()


def test_a_window_without_items_is_one_line_and_writes_nothing(catalogue, tmp_path):
    server, _, _ = catalogue
    out = tmp_path / "scenes"
    windows = ("2024-05-01/2024-05-31", "2023-01-01/2023-02-01")
    result = run(*search_args(server, out, dates=windows))
    assert_one_line_error(result, "no item intersects the bbox in 2023-01-01/2023-02-01")
    assert not out.exists()


def test_a_window_with_only_cloudy_items_names_the_least_cloud_found(catalogue, tmp_path):
    server, _, _ = catalogue
    args = search_args(server, tmp_path / "s", "--max-cloud", "1", dates=["2024-05-01/2024-05-31"])
    result = run(*args)
    assert_one_line_error(result, "2024-05-01/2024-05-31", "cloud cover <= 1 %", "5 %")


def test_a_missing_asset_lists_the_assets_the_items_have(catalogue, tmp_path):
    server, _, _ = catalogue
    args = search_args(server, tmp_path / "s")
    args[args.index("--assets") + 1] = "red,nir"
    assert_one_line_error(run(*args), "has no asset nir", "blue, green, red")


def test_an_unreachable_api_is_one_line(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("search", "--stac", f"http://127.0.0.1:{port}/", "--collection", "s2",
                 "--bbox", "11,55,11.1,55.1", "--dates", "2024-05-01/2024-05-31",
                 "--assets", "red", "--out", tmp_path / "s")  # fmt: skip
    assert_one_line_error(result, "cannot read the STAC API")


def test_an_out_folder_with_other_files_is_refused_even_with_overwrite(catalogue, tmp_path):
    server, _, _ = catalogue
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_one_line_error(run(*search_args(server, out, "--overwrite")), "notes.txt")
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_earlier_search_is_replaced_with_overwrite_only(catalogue, scenes, tmp_path):
    import shutil

    server, _, _ = catalogue
    out = tmp_path / "scenes"
    shutil.copytree(scenes[0], out)
    assert_one_line_error(run(*search_args(server, out)), "already exists")
    assert run(*search_args(server, out, "--overwrite")).exit_code == 0


def test_a_pipeline_searches_once_then_skips_the_stage(catalogue, tmp_path):
    server, _, _ = catalogue
    pipeline, bbox = tmp_path / "season.yaml", ",".join(map(str, BBOX))
    pipeline.write_text(
        "stages:\n"
        f"  - search: {{stac: '{server.url('')}', collection: s2, bbox: '{bbox}',"
        " bbox-crs: 'EPSG:32633', dates: [2024-05-01/2024-05-31, 2024-07-01/2024-07-31],"
        " assets: [red, green, blue], out: scenes}\n"
        "  - stack: {rasters: [scenes/2024-05-01_2024-05-31.vrt, scenes/2024-07-01_2024-07-31.vrt],"
        " out: season.vrt}\n"
    )
    first = run("run", pipeline)
    assert first.exit_code == 0, first.output
    with rasterio.open(tmp_path / "season.vrt") as src:  # the windows' bands named apart
        assert src.descriptions[:2] == ("2024-05-01_2024-05-31_red", "2024-05-01_2024-05-31_green")
        assert src.count == 6
    again = run("run", pipeline)
    assert again.exit_code == 0 and again.output.count("skipped") == 2, again.output


@pytest.mark.parametrize(
    "bbox, crs, words",
    [
        ("179,10,-179,11", "EPSG:4326", "antimeridian"),
        ("11,55,11,56", "EPSG:4326", "empty"),
        ("11,55,10,56", "EPSG:32633", "empty"),
        ("11,55,12", "EPSG:4326", "four numbers"),
        ("500000,5300000,600000,5400000", "EPSG:4326", "outside longitude"),
        ("11,55,12,56", "EPSG:99999", "not a CRS"),
    ],
)
def test_bad_bboxes_are_refused(bbox, crs, words):
    with pytest.raises(ParameterError, match=words):
        parse_bbox(bbox, crs)


def test_a_bbox_in_another_crs_is_searched_in_longitude_and_latitude():
    box = parse_bbox(BBOX, "EPSG:32633")
    assert 14.9 < box.west < box.east < 15.1 and 47.8 < box.south < box.north < 47.9
    assert box.bounds_in(box.crs) == BBOX


@pytest.mark.parametrize("text", ["2024-05-01", "2024-05-31/2024-05-01", "May/June"])
def test_bad_date_windows_are_refused(text):
    with pytest.raises(ParameterError, match="dates"):
        parse_window(text)


def test_an_unknown_signer_is_refused_before_any_request(tmp_path):
    from geoseg import search

    with pytest.raises(ParameterError, match="`sign` 'aws' is not one of planetary-computer"):
        search("http://127.0.0.1:9/", "s2", "11,55,11.1,55.1", ["2024-05-01/2024-05-31"],
               ["red"], tmp_path / "s", sign="aws")  # fmt: skip


def test_planetary_computer_urls_are_signed_by_gdal_and_no_token_is_written():
    href = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/T32/B04.tif"
    from pystac import Asset

    path = asset_path(Asset(href), "sentinel-2-l2a", "planetary-computer")
    assert path.startswith("/vsicurl?pc_url_signing=yes&pc_collection=sentinel-2-l2a&url=")
    assert "sig=" not in path and "token" not in path
    assert asset_path(Asset(href), "s2", None) == f"/vsicurl/{href}"


def test_the_mosaics_crs_is_the_one_most_items_share_ties_to_the_least_cloudy():
    from pyproj import CRS

    from geoseg.catalog.items import Found, majority_crs

    def found(epsg, cloud):
        return Found(None, cloud, CRS.from_epsg(epsg))

    assert majority_crs([[found(32632, 1.0)], [found(32633, 5.0), found(32633, 9.0)]]) == (
        CRS.from_epsg(32633))  # fmt: skip
    tie = [[found(32633, 5.0), found(32632, 2.0)]]
    assert majority_crs(tie) == CRS.from_epsg(32632)
    assert majority_crs([[Found(None, 1.0, None)]]) is None
