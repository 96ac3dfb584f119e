"""geoseg predict: seamless blocks, the COG, nodata, precision, TTA, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from helpers import assert_one_line_error, run

from geoseg.contracts import read_model_card
from geoseg.errors import Interrupted
from geoseg.inference.predictor import predict
from geoseg.models.forward import (
    _PASSES,
    ForwardPass,
    ForwardSpec,
    dihedral,
    forward_pass,
    undo_dihedral,
)
from geoseg.models.sliding_window import ChipGrid


@pytest.fixture(scope="module")
def scene_image(tiny_chips):
    return tiny_chips.parent / "scene" / "image.tif"


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.dataset_mask()


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def spec_for(model_dir, **changes):
    options = dict(batch_size=4, device="cpu", precision="off")
    return ForwardSpec.from_card(model_dir, read_model_card(model_dir), **{**options, **changes})


def test_chip_grid_covers_the_raster_and_ignores_blocks():
    grid = ChipGrid(64, 16)
    origins = grid.origins(300)
    assert origins[0] == -8 and np.all(np.diff(origins) == 48) and origins[-1] + 64 >= 300
    assert set(grid.touching(300, 100, 150)) == {o for o in origins if o < 150 and o + 64 > 100}


def test_block_size_does_not_change_the_probabilities(tiny_model, scene_image, tmp_path):
    small = predict(scene_image, tiny_model, tmp_path / "a.tif", block_size=64, overlap=16)
    large = predict(scene_image, tiny_model, tmp_path / "b.tif", block_size=512, overlap=16)
    a, b = read(tmp_path / "a.tif")[0], read(tmp_path / "b.tif")[0]
    close = np.abs(a.astype(int) - b.astype(int)) <= 1
    assert close.mean() >= 0.999
    assert small.blocks == 64 and large.blocks == 1 and small.chips > large.chips
    assert a.std() > 0  # a real prediction, not a constant


def test_output_is_a_valid_cog_on_the_input_grid(tiny_model, make_raster, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    image = make_raster(width=1100, height=900, count=3)
    summary = predict(image, tiny_model, tmp_path / "pred.tif", block_size=256, overlap=8)
    valid, errors, _ = cog_validate(str(tmp_path / "pred.tif"), strict=True)
    assert valid, errors
    with rasterio.open(image) as src, rasterio.open(tmp_path / "pred.tif") as pred:
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
        assert pred.descriptions == ("parcels", "boundary") and pred.dtypes == ("uint8",) * 2
        assert pred.overviews(1) and pred.compression.name.lower() == "deflate"
        assert set(json.loads(pred.tags()["geoseg_thresholds"])) == {"parcels", "boundary"}
    assert summary.chips > 0 and "chips/s" in summary.describe()
    assert not leftovers(tmp_path)


def test_nodata_stays_nodata_and_is_never_positive(tiny_model, make_raster, tmp_path):
    data = np.random.default_rng(1).integers(1, 255, (3, 200, 260)).astype("uint8")
    data[:, 50:120, 30:100] = 0
    data[:, :, 200:] = 0  # a collar wider than a chip: its chips are skipped
    image = make_raster(width=260, height=200, count=3, nodata=0, data=data)
    predict(image, tiny_model, tmp_path / "pred.tif", block_size=128, overlap=16)
    probabilities, mask = read(tmp_path / "pred.tif")
    nodata = (data == 0).all(axis=0)
    assert np.array_equal(mask == 0, nodata)
    assert not probabilities[:, nodata].any()
    assert probabilities[:, ~nodata].any()


def test_bfloat16_agrees_with_float32(tiny_model, scene_image, tmp_path):
    fast = predict(scene_image, tiny_model, tmp_path / "bf16.tif", mixed_precision="on")
    exact = predict(scene_image, tiny_model, tmp_path / "fp32.tif", mixed_precision="off")
    assert (fast.precision, exact.precision) == ("mixed_bfloat16", "float32")
    a, b = read(tmp_path / "bf16.tif")[0].astype(int), read(tmp_path / "fp32.tif")[0].astype(int)
    assert np.abs(a - b).mean() < 2.0  # under 1 % of the 0..255 range on average
    thresholds = read_model_card(tiny_model)["threshold"]
    for band, name in enumerate(("parcels", "boundary")):
        level = round(thresholds[name] * 255)
        assert ((a[band] >= level) == (b[band] >= level)).mean() > 0.99


def test_dihedral_transforms_are_undone():
    batch = np.random.default_rng(0).random((2, 8, 8, 3))
    for k in range(8):
        assert np.array_equal(undo_dihedral(dihedral(batch, k), k), batch)
    assert len({dihedral(batch, k).tobytes() for k in range(8)}) == 8


def test_tta_is_equivariant_to_rotation(tiny_model):
    forward = ForwardPass(spec_for(tiny_model, tta=True))
    chips = np.random.default_rng(2).random((3, 64, 64, 3)).astype(np.float32)
    turned = forward(np.rot90(chips, 1, axes=(1, 2)))
    np.testing.assert_allclose(turned, np.rot90(forward(chips), 1, axes=(1, 2)), atol=1e-5)
    plain = ForwardPass(spec_for(tiny_model))(chips)
    assert not np.allclose(plain, forward(chips), atol=1e-4)


def test_forward_pass_is_traced_once_and_cached_per_process(tiny_model):
    spec = spec_for(tiny_model, batch_size=8)
    forward = forward_pass(spec)
    assert forward is forward_pass(spec)
    for n in (3, 8, 5):
        assert forward(np.zeros((n, 64, 64, 3), np.float32)).shape == (n, 64, 64, 2)
    assert forward._run.experimental_get_tracing_count() == 1


def test_a_model_saved_again_in_its_folder_is_loaded_again(tiny_model, tmp_path):
    import shutil

    import keras

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    chips = np.random.default_rng(3).random((2, 64, 64, 3)).astype(np.float32)
    before = forward_pass(spec_for(folder))(chips)
    retrained = keras.models.load_model(folder / "model.keras", compile=False)
    retrained.set_weights([w * 0.5 for w in retrained.get_weights()])
    retrained.save(folder / "model.keras")  # as a new `geoseg train --overwrite` would
    after = forward_pass(spec_for(folder))(chips)
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(after, ForwardPass(spec_for(folder))(chips), atol=1e-6)
    assert [s.version for s in _PASSES if s.model_dir == str(folder)] == [spec_for(folder).version]


def interrupt_after(blocks: int):
    """A progress callback that stops the run (as Ctrl-C does) after ``blocks`` blocks."""

    def progress(done, total):
        if done == blocks:
            raise KeyboardInterrupt

    return progress


def test_interrupted_run_leaves_nothing_that_looks_finished(
    tiny_model, scene_image, tmp_path, monkeypatch
):
    import geoseg.inference.predictor

    calls = []
    original = geoseg.inference.predictor.predict_block

    def failing(job, window, index):
        calls.append(window)
        if len(calls) == 3:
            raise RuntimeError("worker lost")
        return original(job, window, index)

    monkeypatch.setattr(geoseg.inference.predictor, "predict_block", failing)
    with pytest.raises(RuntimeError):
        predict(scene_image, tiny_model, tmp_path / "pred.tif", block_size=128, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".pred.tif.partial.json", ".pred.tif.partial.tif"
    ]  # fmt: skip
    assert len(json.loads((tmp_path / ".pred.tif.partial.json").read_text())["done"]) == 2


def test_resumed_run_equals_an_uninterrupted_run(tiny_model, scene_image, tmp_path):
    options = dict(block_size=128, overlap=16, workers=1)
    whole = predict(scene_image, tiny_model, tmp_path / "whole.tif", **options)
    with pytest.raises(Interrupted, match="add `resume` to continue") as stopped:
        predict(scene_image, tiny_model, tmp_path / "pred.tif", progress=interrupt_after(5),
                **options)  # fmt: skip
    assert stopped.value.resumable
    assert not (tmp_path / "pred.tif").exists()
    again = predict(scene_image, tiny_model, tmp_path / "pred.tif", resume=True, **options)
    assert again.resumed_blocks == 5 and again.blocks == whole.blocks == 16
    assert again.chips < whole.chips
    (a, mask_a), (b, mask_b) = read(tmp_path / "whole.tif"), read(tmp_path / "pred.tif")
    assert (a == b).all() and (mask_a == mask_b).all()
    with rasterio.open(tmp_path / "whole.tif") as x, rasterio.open(tmp_path / "pred.tif") as y:
        assert x.tags() == y.tags() and x.descriptions == y.descriptions
    assert not leftovers(tmp_path)


def test_ctrl_c_in_the_cli_says_what_was_kept(tiny_model, scene_image, tmp_path, monkeypatch):
    from contextlib import contextmanager

    import geoseg.cli.predict

    def stopping_after(blocks):
        @contextmanager
        def progress_bar(description):
            yield interrupt_after(blocks)

        return progress_bar

    args = ["-m", tiny_model, "--block-size", "128", "--workers", "1"]
    monkeypatch.setattr(geoseg.cli.predict, "progress_bar", stopping_after(2))
    result = run("predict", scene_image, "-o", tmp_path / "pred.tif", *args)
    assert_one_line_error(result, "blocks written are kept in", "add --resume to continue")


def test_resume_refuses_other_options_and_a_fresh_run_refuses_to_discard(
    tiny_model, scene_image, tmp_path
):
    out = tmp_path / "pred.tif"
    with pytest.raises(KeyboardInterrupt):
        predict(scene_image, tiny_model, out, block_size=128, workers=1,
                progress=interrupt_after(2))  # fmt: skip
    result = run("predict", scene_image, "-m", tiny_model, "-o", out, "--block-size", "128",
                 "--overlap", "8", "--resume")  # fmt: skip
    assert_one_line_error(result, "--resume", "overlap")
    result = run("predict", scene_image, "-m", tiny_model, "-o", out, "--block-size", "128")
    assert_one_line_error(result, "interrupted run", "--resume")
    assert (tmp_path / ".pred.tif.partial.tif").is_file() and not out.exists()


def test_resume_after_the_raster_only_writes_the_polygons(tiny_model, scene_image, tmp_path):
    options = dict(block_size=128, workers=1, mode="parcels")
    predict(scene_image, tiny_model, tmp_path / "pred.tif", **options)
    summary = predict(scene_image, tiny_model, tmp_path / "pred.tif",
                      vectors=tmp_path / "p.gpkg", resume=True, **options)  # fmt: skip
    assert summary.chips == 0 and summary.vectors.polygons > 0


def test_cli_predict_with_parcels(tiny_model, scene_image, tmp_path):
    import geopandas as gpd

    result = run(
        "predict", scene_image, "--model", tiny_model, "--out", tmp_path / "pred.tif",
        "--vectors", tmp_path / "parcels.gpkg", "--mode", "parcels", "--block-size", "128",
        "--min-area", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "chips/s" in result.output and "parcels" in result.output
    parcels = gpd.read_file(tmp_path / "parcels.gpkg", layer="parcels")
    with rasterio.open(scene_image) as src:
        assert parcels.crs == src.crs
    assert len(parcels) and parcels.is_valid.all() and (parcels.area >= 4).all()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize(
    "case, words",
    [
        ("bands", ["4 bands", "trained on 3"]),
        ("no_crs", ["no CRS"]),
        ("no_model", ["not a geoseg model"]),
        ("incomplete_model", ["not a geoseg model"]),
        ("broken_model", ["cannot load the model"]),
        ("overlap", ["--overlap"]),
        ("exists", ["already exists"]),
        ("vectors_exist", ["already exists"]),
        ("scheduler", ["cannot reach"]),
        ("block", ["--block-size"]),
        ("out_is_input", ["is an input"]),
    ],
)
def test_bad_input_gives_one_line_and_no_output(
    case, words, tiny_model, scene_image, make_raster, tmp_path
):
    import shutil

    model, image, out = tiny_model, scene_image, tmp_path / "out" / "pred.tif"
    extra = []
    if case == "bands":
        image = make_raster(count=4)
    elif case == "no_crs":
        image = make_raster(crs=None)
    elif case == "no_model":
        model = tmp_path / "nothing"
    elif case in ("incomplete_model", "broken_model"):
        model = tmp_path / "model"
        shutil.copytree(tiny_model, model)
        if case == "incomplete_model":
            (model / "model.keras").unlink()
        else:
            (model / "model.keras").write_bytes(b"not a zip")
    elif case == "overlap":
        extra = ["--overlap", "64"]  # the tiny model has 64 px chips
    elif case in ("exists", "vectors_exist"):
        out.parent.mkdir()
        target = out if case == "exists" else out.parent / "v.gpkg"
        target.write_text("keep me")
        extra = ["--vectors", out.parent / "v.gpkg"]
    elif case == "scheduler":
        extra = ["--scheduler", "tcp://127.0.0.1:1"]
    elif case == "block":
        extra = ["--block-size", "100"]
    elif case == "out_is_input":
        image = tmp_path / "out" / "pred.tif"
        image.parent.mkdir()
        shutil.copy(scene_image, image)
        extra = ["--overwrite"]
    result = run("predict", image, "--model", model, "--out", out, *extra)
    assert_one_line_error(result, *words)
    if case == "out_is_input":
        with rasterio.open(out) as src:
            assert src.count == 3  # the input, untouched
        return
    if case not in ("exists", "vectors_exist"):
        assert not out.exists()
    if out.parent.exists():
        assert not leftovers(out.parent)
        assert {p.name for p in out.parent.iterdir()} <= {"pred.tif", "v.gpkg"}


@pytest.mark.parametrize(
    "flags, inference, expected",
    [
        ({"avx2"}, True, "float32"),
        ({"avx512_bf16"}, True, "mixed_bfloat16"),  # dot products: faster inference, same IoU
        ({"avx512_bf16"}, False, "float32"),  # training keeps float32 without matrix units
        ({"amx_bf16", "avx512_bf16"}, False, "mixed_bfloat16"),
    ],
)
def test_auto_precision_follows_the_processor(flags, inference, expected, monkeypatch):
    import platform

    from geoseg import device

    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert device.resolve_precision("auto", gpu=False, inference=inference) == expected
    assert device.resolve_precision("off", gpu=False, inference=inference) == "float32"
    assert device.resolve_precision("auto", gpu=True, inference=inference) == "mixed_float16"
