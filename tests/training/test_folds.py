"""Cross-validated training: spatial folds of chips, the ensemble model, ``train --folds``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from helpers import assert_one_line_error, run

from geoseg import synth, tile, train
from geoseg.contracts import read_model_card
from geoseg.errors import Interrupted, ParameterError
from geoseg.models.config import UNetConfig
from geoseg.models.unet import build_model, member_name
from geoseg.training.chip_areas import placed_chips
from geoseg.training.dataset import open_chips
from geoseg.training.folds import pooled_chips, spatial_folds

TINY = dict(
    base_filters=4, depth=2, batch_size=8, mixed_precision="off", epoch_chips=0
)  # one pass per epoch: tests check behaviour, not the fit


@pytest.fixture(scope="module")
def overlapping_chips(tmp_path_factory):
    """64 px chips every 32 px of a 384 px synthetic scene: neighbours share pixels."""
    root = tmp_path_factory.mktemp("folds")
    synth(str(root / "scene"), size=384, seed=4, buildings=False)
    tile(
        [str(root / "scene" / "image.tif")], str(root / "chips"),
        labels=str(root / "scene" / "parcels.gpkg"), boundary_width="1.5", size=64, stride=32,
        keep_empty=1.0, val_fraction=0.2, test_fraction=0.1, workers=1,
    )  # fmt: skip
    return open_chips(root / "chips")


def footprints(chips, pairs):
    index = pyogrio.read_dataframe(chips.root / "chips.gpkg", columns=["image"])
    by_image = dict(zip((str(chips.root / p) for p in index["image"]), index.geometry.values))
    return [by_image[image] for image, _ in pairs]


def test_every_chip_is_validated_once_by_a_model_that_never_saw_its_pixels(overlapping_chips):
    chips = overlapping_chips
    views = spatial_folds(chips, 3, seed=0)
    pooled = {image for image, _ in chips.files["train"] + chips.files["val"]}
    spare = set(str(chips.root / p) for p in pooled_chips(chips)["image"]) - pooled
    assert spare  # the chips kept aside at tile's split borders, away from the test chips
    test = shapely.union_all(footprints(chips, chips.files["test"]))
    for chip in footprints(chips, [(image, None) for image in spare]):
        assert shapely.intersection(chip, test).area < 1e-6 * chip.area
    pooled |= spare
    validated = [image for view in views for image, _ in view.files["val"]]
    assert sorted(validated) == sorted(pooled)  # each once
    for view in views:
        assert view.files["test"] == chips.files["test"]
        assert view.files["train"] and view.files["val"]
        val = shapely.union_all(footprints(chips, view.files["val"]))
        for chip in footprints(chips, view.files["train"]):
            assert shapely.intersection(chip, val).area < 1e-6 * chip.area
    sizes = [len(v.files["val"]) for v in views]
    assert max(sizes) - min(sizes) <= max(sizes) // 2  # blocks dealt to the smallest fold


def test_blocks_are_as_large_as_the_folds_allow(overlapping_chips):
    from geoseg.training.folds import _blocks

    chips = overlapping_chips
    index = pyogrio.read_dataframe(chips.root / "chips.gpkg", columns=["split"])
    pooled = np.asarray(index[index["split"] != "test"].geometry.values)
    two, _ = _blocks(pooled, chips.chip_size, 2)  # 4 chips a side: 256 px blocks
    three, block_of = _blocks(pooled, chips.chip_size, 3)  # too few: halved to 128 px
    assert len(two) < 6 <= len(three)
    assert np.bincount(block_of).min() >= 1


def test_folds_are_seeded(overlapping_chips):
    first = [v.files["val"] for v in spatial_folds(overlapping_chips, 2, seed=1)]
    again = [v.files["val"] for v in spatial_folds(overlapping_chips, 2, seed=1)]
    assert first == again


def test_too_many_folds_for_the_blocks_is_an_error(overlapping_chips):
    with pytest.raises(ParameterError, match="blocks of chips"):
        spatial_folds(overlapping_chips, 500, seed=0)
    with pytest.raises(ParameterError, match="at least 2"):
        spatial_folds(overlapping_chips, 1, seed=0)


def test_stitched_areas_follow_the_view_not_the_index(overlapping_chips):
    view = spatial_folds(overlapping_chips, 2, seed=0)[1]
    placed = {chip.image for chip in placed_chips(view, "val")}
    assert placed == {image for image, _ in view.files["val"]}


def test_ensemble_is_the_mean_of_its_members_and_reloads(tmp_path):
    import keras

    config = UNetConfig(bands=3, classes=2, base_filters=4, depth=2, heads=("a", "b"), members=3)
    ensemble = build_model(config)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    members = [ensemble.get_layer(member_name(k)) for k in range(3)]
    expected = np.mean([np.asarray(m(x, training=False)) for m in members], axis=0)
    np.testing.assert_allclose(np.asarray(ensemble(x, training=False)), expected, atol=1e-6)
    ensemble.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, atol=1e-6)


def test_an_ensemble_reloads_under_another_precision(tmp_path):
    import keras

    from geoseg.models.forward import load_inference_model

    config = UNetConfig(bands=3, classes=1, base_filters=4, depth=2, heads=("a",), members=2)
    build_model(config).save(tmp_path / "model.keras")
    model = load_inference_model(
        tmp_path, {"architecture": "unet", **config.to_dict()}, "mixed_bfloat16"
    )
    assert keras.config.dtype_policy().name == "float32"
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32")
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(
        np.asarray(model(x, training=False)), np.asarray(saved(x, training=False)), atol=0.05
    )


@pytest.fixture(scope="module")
def ensemble(overlapping_chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble") / "model"
    summary = train(overlapping_chips.root, out, epochs=2, seed=5, folds=2, **TINY)
    return out, summary


def test_train_folds_writes_an_ensemble_with_out_of_fold_scores(ensemble, overlapping_chips):
    out, summary = ensemble
    card = read_model_card(out)
    training = card["training"]
    assert training["folds"] == 2 and training["validation"] == "out_of_fold"
    assert [f["seed"] for f in training["per_fold"]] == [5, 6]
    assert len(training["best_epoch"]) == 2 and training["epochs_run"] == 4
    assert training["val_chips"] == len(pooled_chips(overlapping_chips))
    assert card["model"]["members"] == 2
    assert set(card["metrics"]["val"]) == {"parcels", "boundary"}
    assert "test" in card["metrics"]
    assert card["delineation"]["tuned_for"] == "object_f1"
    assert card["delineation"]["fit_objects"]["true"] > 0  # each fold's own training areas
    for k in range(2):
        assert read_model_card(out / "folds" / member_name(k))["model"]["members"] == 1
    history = pd.read_csv(out / "history.csv")
    assert list(history["fold"]) == [0, 0, 1, 1]
    assert "2 folds, best epochs" in summary.describe()
    assert not any(p.name.endswith(".partial") for p in out.parent.iterdir())


def test_an_ensemble_predicts(ensemble, overlapping_chips, tmp_path):
    import rasterio

    from geoseg import predict

    out, _ = ensemble
    image = overlapping_chips.root.parent / "scene" / "image.tif"
    predict(image, out, tmp_path / "pred.tif", block_size=256, overlap=16)
    with rasterio.open(tmp_path / "pred.tif") as src:
        assert src.count == 2 and src.descriptions == ("parcels", "boundary")


def test_folds_cli_bad_input(overlapping_chips, tmp_path):
    chips = str(overlapping_chips.root)
    result = run("train", chips, "--out", tmp_path / "m", "--folds", "0")
    assert_one_line_error(result, "--folds")
    result = run("train", chips, "--out", tmp_path / "m", "--folds", "400", "--epochs", "1")
    assert_one_line_error(result, "blocks of chips")
    result = run("train", chips, "--out", tmp_path / "m", "--folds", "2", "--resume")
    assert_one_line_error(result, "nothing to resume")
    assert not (tmp_path / "m").exists()


def test_folds_on_overlapping_real_patches_train_or_say_which_k_works(tmp_path):
    """Nine 160 px patches of the Danish scene, each 8 px from the last (95 % overlap), as
    field samples are often published: every fold trains, or one line names a K that does."""
    import rasterio
    from conftest import shared_sample
    from rasterio.windows import Window

    folder = shared_sample("denmark_s2_parcels")
    patches = []
    with rasterio.open(folder / "image.tif") as src:
        for i in range(9):
            window = Window(8 * i, 8 * i, 160, 160)
            profile = {**src.profile, "width": 160, "height": 160,
                       "transform": src.window_transform(window)}  # fmt: skip
            patches.append(tmp_path / f"patch{i}.tif")
            with rasterio.open(patches[-1], "w", **profile) as dst:
                dst.write(src.read(window=window))
    tile(
        [str(p) for p in patches], str(tmp_path / "chips"), labels=str(folder / "parcels.shp"),
        boundary_width="1px", size=64, stride=32, keep_empty=1.0, val_fraction=0.2, workers=1,
    )  # fmt: skip
    chips = open_chips(tmp_path / "chips")
    for folds in (2, 3, 5):
        try:
            views = spatial_folds(chips, folds, seed=0)
        except ParameterError as exc:
            assert "works" in str(exc), exc
            message = str(exc)
            if "--folds" in message.split("; ")[-1]:
                working = int(message.split("--folds ")[-1].split()[0])
                assert all(v.files["train"] for v in spatial_folds(chips, working, seed=0))
        else:
            assert all(v.files["train"] and v.files["val"] for v in views)


def test_auto_folds_an_ensemble_for_a_small_parcel_set_else_one(overlapping_chips, monkeypatch):
    from geoseg.training import folds

    assert folds.auto_folds(overlapping_chips, delineates=True, seed=0) == folds.SMALL_SET_FOLDS
    assert folds.auto_folds(overlapping_chips, delineates=False, seed=0) == 1
    monkeypatch.setattr(folds, "SMALL_SET_PIXELS", 64 * 64)  # a "large" set
    assert folds.auto_folds(overlapping_chips, delineates=True, seed=0) == 1


def test_auto_folds_takes_fewer_folds_where_three_leave_one_without_train_chips(
    overlapping_chips, monkeypatch
):
    from geoseg.training import folds

    works = {2}
    original = folds._views

    def views(chips, pooled, k, seed):  # as if only 2 folds left every fold train chips
        found = original(chips, pooled, k, seed)
        return found if k in works else [replace_train(found[0], [])] + found[1:]

    monkeypatch.setattr(folds, "_views", views)
    assert folds.auto_folds(overlapping_chips, delineates=True, seed=0) == 2
    works.clear()
    assert folds.auto_folds(overlapping_chips, delineates=True, seed=0) == 1


def replace_train(view, train):
    from dataclasses import replace

    return replace(view, files={**view.files, "train": train})


def test_train_folds_auto_by_default(overlapping_chips, tmp_path):
    """With no folds given, a small set of parcel chips trains an ensemble of three."""
    summary = train(overlapping_chips.root, tmp_path / "m", epochs=1, seed=5, **TINY)
    assert summary.card["training"]["folds"] == 3 and summary.card["model"]["members"] == 3


def test_an_interrupted_ensemble_resumes_fold_by_fold(overlapping_chips, tmp_path):
    """Stopped in the second fold: the first fold's model is kept, the second resumes from its
    last epoch, and nothing else is trained again."""
    out = tmp_path / "m"

    def interrupt(epoch, epochs, logs):
        if logs["fold"] == "2/2" and epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="add `resume` to continue") as stopped:
        train(overlapping_chips.root, out, epochs=2, seed=5, folds=2, on_epoch=interrupt, **TINY)
    assert stopped.value.resumable  # the finished fold and the fold under way are kept
    first = read_model_card(tmp_path / ".m.partial" / "folds" / member_name(0))
    result = run("train", str(overlapping_chips.root), "--out", out, "--folds", "2")
    assert_one_line_error(result, "interrupted run", "--resume")  # a new run does not clobber it
    epochs = []
    with pytest.raises(ParameterError, match="base_filters"):
        train(overlapping_chips.root, out, epochs=2, seed=5, folds=2, resume=True,
              **{**TINY, "base_filters": 8})  # fmt: skip
    summary = train(
        overlapping_chips.root, out, epochs=2, seed=5, folds=2, resume=True,
        on_epoch=lambda epoch, _, logs: epochs.append((logs["fold"], epoch)), **TINY,
    )  # fmt: skip
    assert epochs == [("2/2", 2)]  # fold 1 finished before; fold 2 resumed after its epoch 1
    assert read_model_card(out / "folds" / member_name(0))["created"] == first["created"]
    assert summary.card["model"]["members"] == 2 and not (tmp_path / ".m.partial").exists()
    assert not (out / "folds.json").exists()


def test_resume_without_an_interrupted_run_is_one_line(overlapping_chips, tmp_path):
    result = run("train", str(overlapping_chips.root), "--out", tmp_path / "m", "--resume")
    assert_one_line_error(result, "nothing to resume")
    assert not (tmp_path / "m").exists()
