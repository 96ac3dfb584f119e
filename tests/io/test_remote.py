"""Rasters behind URLs: read from a real HTTP server on 127.0.0.1 that honours Range requests.

``tile`` and ``predict`` over HTTP must give what they give from the local file; a small window
must cost a small share of the file's bytes; a missing file or a dead host must give one line.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared_sample
from helpers import assert_one_line_error, run
from range_server import RangeServer
from rasterio.windows import Window

from geoseg.errors import InputFileError
from geoseg.io.raster import open_raster, open_raster_info
from geoseg.io.remote import (
    REMOTE_OPTIONS,
    absolute,
    gdal_options,
    gdal_path,
    is_gdal_path,
    is_remote,
    local_file_missing,
    suffix,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = RangeServer(tmp_path_factory.mktemp("served"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def cog(tmp_path_factory) -> Path:
    """A 2048 px, 3-band COG with 256 px tiles and overviews (16 MB of random pixels)."""
    path = tmp_path_factory.mktemp("cog") / "cog.tif"
    data = np.random.default_rng(0).integers(0, 256, (3, 2048, 2048), dtype=np.uint8)
    profile = dict(driver="COG", width=2048, height=2048, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(0.5, 0, 500_000, 0, -0.5, 5_300_000),
                   blocksize=256, compress="deflate")  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def closed_port_url(name: str = "image.tif") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def read_chips(folder: Path) -> dict[str, tuple]:
    """Per chip or mask file: its pixels, CRS, transform and band descriptions."""
    found = {}
    for path in sorted(folder.rglob("*.tif")):
        with rasterio.open(path) as src:
            found[str(path.relative_to(folder))] = (src.read(), src.crs, src.transform,
                                                    src.descriptions, src.dtypes)  # fmt: skip
    return found


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("https://example.com/a/b.tif", "/vsicurl/https://example.com/a/b.tif"),
        ("http://example.com/b.tif?sig=1", "/vsicurl/http://example.com/b.tif?sig=1"),
        ("s3://bucket/key/b.tif", "/vsis3/bucket/key/b.tif"),
        ("gs://bucket/b.tif", "/vsigs/bucket/b.tif"),
        ("/vsicurl/https://example.com/b.tif", "/vsicurl/https://example.com/b.tif"),
        ("/vsis3/bucket/b.tif", "/vsis3/bucket/b.tif"),
        ("images/b.tif", "images/b.tif"),
    ],
)
def test_urls_map_to_gdal_network_file_systems_as_rasterio_maps_them(path, expected):
    from rasterio._path import _parse_path

    assert gdal_path(path) == expected
    assert is_gdal_path(path) == is_remote(path) == (path != "images/b.tif")
    if "://" in path:
        assert _parse_path(path).as_vsi() == expected  # the same as rasterio.open would
    assert absolute(path) == (str(Path(path).absolute()) if path == "images/b.tif" else path)


def test_a_signed_url_keeps_its_suffix():
    from geoseg.labels.masks import is_raster_path

    assert suffix("https://example.com/truth.TIF?se=2030&sig=a.b") == ".tif"
    assert is_raster_path("https://example.com/truth.tif?sig=x.gpkg")
    assert not is_raster_path("s3://bucket/parcels.gpkg") and is_raster_path("a/b.tif")


def test_only_local_paths_are_checked_on_the_file_system(tmp_path):
    assert local_file_missing(tmp_path / "none.tif")
    assert not local_file_missing("https://example.com/none.tif")
    assert not local_file_missing("/vsizip/none.zip/a.tif")  # GDAL tells when it opens
    assert is_gdal_path("/vsizip/none.zip/a.tif") and not is_remote("/vsizip/none.zip/a.tif")


def test_remote_options_only_for_remote_paths_and_the_environment_wins(monkeypatch, tmp_path):
    assert gdal_options(tmp_path / "a.tif") == {}
    assert gdal_options("https://example.com/a.tif") == REMOTE_OPTIONS
    monkeypatch.setenv("VSI_CACHE_SIZE", "1000")
    options = gdal_options("s3://bucket/a.tif")
    assert "VSI_CACHE_SIZE" not in options
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


# --- reading -----------------------------------------------------------------------------------


def test_a_small_window_costs_a_small_share_of_the_file(server, cog):
    url = server.serve(cog)
    server.reset()
    window = Window(300, 300, 150, 150)  # in one tile
    with open_raster(url) as src:
        assert rasterio.env.getenv()["GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"] == "YES"
        remote = src.read(window=window)
    with rasterio.open(cog) as src:
        np.testing.assert_array_equal(remote, src.read(window=window))
    share = server.bytes_sent() / cog.stat().st_size
    assert share < 0.03, share  # one of 85 tiles (with the overviews') and the header
    assert {r["path"] for r in server.sent()} == {"/cog.tif"}  # no folder listing
    assert all(r["range"] for r in server.sent())  # range requests only


def test_a_small_window_of_a_real_raster_over_http(server):
    path = shared_sample("unlabelled", "landsat8_7band_uint16.tif")
    url = server.serve(path, "landsat.tif")
    server.reset()
    window = Window(530, 520, 64, 64)  # in the corner tile (3 x 3 tiles of 256 px a band)
    with open_raster(url) as src:
        remote = src.read(window=window)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(remote, src.read(window=window))
    share = server.bytes_sent() / path.stat().st_size
    assert share < 0.1, share


def test_the_header_over_http_is_the_local_one(server, cog):
    remote, local = open_raster_info(server.serve(cog)), open_raster_info(cog)
    assert (remote.width, remote.height, remote.count, remote.dtype, remote.crs) == (
        local.width, local.height, local.count, local.dtype, local.crs
    )  # fmt: skip
    assert remote.transform == local.transform and remote.nodata == local.nodata


def test_missing_and_unreachable_urls_fail_fast_naming_the_url(server):
    for url in (server.url("missing.tif"), closed_port_url()):
        started = time.perf_counter()
        with pytest.raises(InputFileError, match=re.escape(url)):
            open_raster_info(url)
        assert time.perf_counter() - started < 5


# --- commands ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tiny_chips) -> Path:
    return tiny_chips.parent / "scene"


def test_tile_over_http_cuts_the_same_chips(server, scene, tmp_path):
    url = server.serve(scene / "image.tif", "scene.tif")
    shutil.copyfile(scene / "image.tif", tmp_path / "scene.tif")  # the same scene name
    options = ["--labels", scene / "parcels.gpkg", "--boundary-width", "1.5", "--size", 64,
               "--keep-empty", 1.0, "--workers", 2]  # fmt: skip
    local = run("tile", tmp_path / "scene.tif", "--out", tmp_path / "local", *options)
    assert local.exit_code == 0, local.output
    server.reset()
    remote = run("tile", url, "--out", tmp_path / "remote", *options)
    assert remote.exit_code == 0, remote.output
    assert server.bytes_sent("scene.tif") > 0
    chips, served = read_chips(tmp_path / "local"), read_chips(tmp_path / "remote")
    assert chips.keys() == served.keys() and len(chips) > 10
    for name, (data, crs, transform, descriptions, dtypes) in chips.items():
        other = served[name]
        np.testing.assert_array_equal(data, other[0], err_msg=name)
        assert (crs, transform, descriptions, dtypes) == other[1:], name
    index = [gpd.read_file(tmp_path / f / "chips.gpkg") for f in ("local", "remote")]
    assert index[0].drop(columns="geometry").equals(index[1].drop(columns="geometry"))
    assert index[0].geometry.equals(index[1].geometry)
    records = [json.loads((tmp_path / f / "dataset.json").read_text()) for f in ("local", "remote")]
    assert records[0]["normalization"] == records[1]["normalization"]
    assert json.dumps(records[1]).count(url) >= 1  # the source is recorded as its URL


PREDICT_OPTIONS = dict(block_size=128, workers=2, device="cpu")


@pytest.fixture(scope="module")
def prediction(tiny_model, scene, tmp_path_factory) -> Path:
    """The tiny model's prediction of the scene, from the local file."""
    from geoseg import predict

    out = tmp_path_factory.mktemp("local") / "pred.tif"
    predict(scene / "image.tif", tiny_model, out, **PREDICT_OPTIONS)
    return out


def test_predict_over_http_writes_the_same_cog(server, tiny_model, scene, prediction, tmp_path):
    url = server.serve(scene / "image.tif", "predict.tif")
    options = [f"--{k.replace('_', '-')}={v}" for k, v in PREDICT_OPTIONS.items()]
    server.reset()
    remote = run("predict", url, "-m", tiny_model, "-o", tmp_path / "remote.tif", *options)
    assert remote.exit_code == 0, remote.output
    size = (scene / "image.tif").stat().st_size
    assert 0 < server.bytes_sent("predict.tif") < 3 * size  # windows with halos, no download
    with rasterio.open(prediction) as a, rasterio.open(tmp_path / "remote.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
        assert (a.profile, a.descriptions) == (b.profile, b.descriptions)
        assert a.tags()["geoseg_classes"] == b.tags()["geoseg_classes"]


def test_evaluate_against_a_label_raster_over_http(server, scene, prediction, tmp_path):
    from rasterio.features import rasterize

    from geoseg import evaluate

    with rasterio.open(prediction) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1,
                       dtype="uint8", crs=src.crs, transform=src.transform, tiled=True,
                       blockxsize=128, blockysize=128)  # fmt: skip
    parcels = gpd.read_file(scene / "parcels.gpkg").to_crs(profile["crs"])
    codes = rasterize(parcels.geometry, (profile["height"], profile["width"]),
                      transform=profile["transform"], default_value=1, dtype="uint8")  # fmt: skip
    with rasterio.open(tmp_path / "truth.tif", "w", **profile) as dst:
        dst.write(codes, 1)
    url = server.serve(tmp_path / "truth.tif")
    local = evaluate(prediction, tmp_path / "truth.tif", block_size=128, workers=2)
    server.reset()
    remote = evaluate(prediction, url, block_size=128, workers=2)
    assert server.bytes_sent("truth.tif") > 0
    assert remote.pixels == local.pixels and remote.boundary == local.boundary
    assert local.pixels["parcels"]["iou"] > 0  # a real score


def test_quicklook_of_an_image_over_http(server, scene, prediction, tmp_path):
    from geoseg import quicklook

    url = server.serve(scene / "image.tif", "quicklook.tif")
    quicklook(prediction, tmp_path / "local.png", image=scene / "image.tif", max_size=256)
    quicklook(prediction, tmp_path / "remote.png", image=url, max_size=256)
    assert (tmp_path / "local.png").read_bytes() == (tmp_path / "remote.png").read_bytes()


@pytest.mark.parametrize("where", ["missing", "dead host"])
def test_commands_refuse_a_bad_url_in_one_line(where, server, tiny_model, tmp_path):
    url = server.url("missing.tif") if where == "missing" else closed_port_url()
    started = time.perf_counter()
    commands = [
        ["predict", url, "-m", tiny_model, "-o", tmp_path / "p.tif"],
        ["tile", url, "--out", tmp_path / "chips"],
    ]
    for command in commands:
        assert_one_line_error(run(*command), url)
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "p.tif").exists() and not (tmp_path / "chips").exists()
