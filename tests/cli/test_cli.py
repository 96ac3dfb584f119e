"""The command line: help with examples, one-line errors for bad input, nothing half-written."""

from __future__ import annotations

import pytest
import shapely
from helpers import assert_one_line_error, run

import geoseg.tiling.tiler


@pytest.mark.parametrize("command", [[], ["tile"], ["synth"], ["train"]])
def test_help_shows_examples(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "$ geoseg" in result.output


@pytest.fixture
def scene(make_raster, make_vector):
    image = make_raster(width=256, height=256)
    labels = make_vector([shapely.box(500_010, 5_299_950, 500_060, 5_299_990)], kind=["house"])
    return image, labels


def test_tile_writes_summary(scene, tmp_path):
    image, labels = scene
    result = run("tile", image, "--labels", labels, "--out", tmp_path / "chips")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote 1 chips") and "positive pixels: labels" in result.output


@pytest.mark.parametrize(
    "case, args, words",
    [
        ("missing image", ["{tmp}/nope.tif"], ["nope.tif", "no such file"]),
        ("missing labels", ["{image}", "--labels", "{tmp}/nope.gpkg"], ["no such file"]),
        ("no crs", ["{nocrs}"], ["has no CRS"]),
        ("no transform", ["{notransform}"], ["no geotransform"]),
        ("not a raster", ["{labels}"], ["not a readable raster"]),
        ("labels elsewhere", ["{image}", "--labels", "{faraway}"], ["do not overlap"]),
        (
            "unknown field",
            ["{image}", "--labels", "{labels}", "--class-field", "type"],
            ["unknown class field 'type'", "kind"],
        ),
        (
            "unknown class",
            ["{image}", "--labels", "{labels}", "--class-field", "kind", "--classes", "barn"],
            ["class 'barn' not found"],
        ),
        ("size", ["{image}", "--size", "100"], ["--size must be a positive multiple of 32"]),
        ("negative size", ["{image}", "--size", "-32"], ["--size"]),
        ("stride", ["{image}", "--stride", "300"], ["--stride (300) must not be larger"]),
        (
            "bad width",
            ["{image}", "--labels", "{labels}", "--boundary-width", "-1"],
            ["invalid length"],
        ),
        (
            "both schedulers",
            ["{image}", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
            ["either --workers or --scheduler"],
        ),
        ("dead scheduler", ["{image}", "--scheduler", "tcp://127.0.0.1:9"], ["cannot reach"]),
        ("mixed bands", ["{image}", "{gray}"], ["all images must match"]),
        ("classes without labels", ["{image}", "--classes", "a"], ["need --labels"]),
        (
            "colliding classes",
            ["{image}", "--labels", "{collide}", "--class-field", "kind"],
            ["'Road' and 'road' collide"],
        ),
        ("bad scheduler", ["{image}", "--scheduler", "foo"], ["expected an address"]),
    ],
)
def test_bad_input_gets_one_line_error(
    case, args, words, scene, make_raster, make_vector, tmp_path
):
    image, labels = scene
    paths = {
        "tmp": tmp_path,
        "image": image,
        "labels": labels,
        "nocrs": make_raster(crs=None),
        "notransform": make_raster(transform=False),
        "faraway": make_vector([shapely.box(0, 0, 10, 10)], name="far.gpkg"),
        "gray": make_raster(count=1),
        "collide": make_vector(
            [shapely.box(500_000, 5_299_950, 500_050, 5_300_000)] * 2,
            name="roads.gpkg",
            kind=["Road", "road"],
        ),
    }
    out = tmp_path / "chips"
    result = run("tile", *[a.format(**paths) for a in args], "--out", out)
    assert_one_line_error(result, *words)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".chips")]


def test_existing_output_is_refused_and_kept(scene, tmp_path):
    image, _ = scene
    out = tmp_path / "chips"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run("tile", image, "--out", out), "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert run("tile", image, "--out", out, "--overwrite").exit_code == 0
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()


def test_output_holding_the_inputs_is_refused_even_with_overwrite(scene, tmp_path):
    image, labels = scene
    result = run("tile", image, "--labels", labels, "--out", tmp_path, "--overwrite")
    assert_one_line_error(result, "holds the input")
    assert image.exists() and labels.exists()


def test_empty_output_folder_is_used(scene, tmp_path):
    image, _ = scene
    (tmp_path / "chips").mkdir()
    assert run("tile", image, "--out", tmp_path / "chips").exit_code == 0


def test_failure_midway_leaves_nothing_behind(scene, tmp_path, monkeypatch):
    image, _ = scene

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(geoseg.tiling.tiler, "cut_chips", broken)
    assert_one_line_error(run("tile", image, "--out", tmp_path / "chips"), "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg", image.name]


def test_synth_bad_crs(tmp_path):
    assert_one_line_error(run("synth", "--out", tmp_path / "s", "--crs", "EPSG:0"), "unknown CRS")
    assert not (tmp_path / "s").exists()


def test_library_messages_name_parameters_and_the_cli_names_options(make_raster, tmp_path):
    from geoseg import tile
    from geoseg.errors import ParameterError

    image = make_raster()
    expected = "^`stride` \\(128\\) must not be larger than `size`"
    with pytest.raises(ParameterError, match=expected) as raised:
        tile([image], tmp_path / "lib", size=64, stride=128)
    assert raised.value.parameters == ["stride", "size"]
    result = run("tile", image, "--out", tmp_path / "cli", "--size", "64", "--stride", "128")
    assert_one_line_error(result, "--stride (128) must not be larger than --size (64)")


def test_library_log_lines_name_options_on_the_terminal():
    import logging

    from geoseg.cli.options import FlagsFormatter

    record = logging.LogRecord(
        "geoseg.io.cog", logging.INFO, __file__, 1, "kept %d blocks for `resume`", (3,), None
    )
    assert FlagsFormatter("%(message)s").format(record) == "kept 3 blocks for --resume"
