"""geoseg train --task multiclass and --encoder: the card, the model, the freeze schedule and
their bad inputs."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TRAINING
from helpers import assert_one_line_error, run

from geoseg import train
from geoseg.contracts import read_model_card
from geoseg.training.settings import partial_directory


@pytest.fixture(scope="module")
def multiclass_model(tiny_chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("multiclass") / "model"
    summary = train(tiny_chips, out, task="multiclass", epochs=2, seed=1, **TINY_TRAINING)
    return out, summary


def test_multiclass_card_and_softmax_model(multiclass_model):
    out, summary = multiclass_model
    card = read_model_card(out)
    assert card.task == "multiclass" == card["model"]["task"]
    assert card["classes"] == ["background", "parcels", "boundary"]
    assert card["threshold"] == {} and card.thresholds == {}
    assert {t["role"] for t in card["targets"].values()} == {None}
    assert list(card["class_weights"]) == card["classes"]
    for name in card["classes"]:
        assert set(card["metrics"]["val"][name]) == {"iou", "f1", "precision", "recall"}
    matrix = np.array(card["metrics"]["val_confusion"])
    assert matrix.shape == (3, 3) and matrix.sum() > 0
    foreground = [card["metrics"]["val"][n]["iou"] for n in ("parcels", "boundary")]
    present = [iou for iou, row in zip(foreground, matrix[1:]) if row.sum() or iou]
    assert card["metrics"]["val_mean_iou"] == pytest.approx(np.mean(present))
    model = keras.models.load_model(out / "model.keras")
    y = model(np.random.default_rng(0).random((1, 64, 64, 3), np.float32)).numpy()
    assert y.shape == (1, 64, 64, 3) and np.allclose(y.sum(-1), 1.0, atol=1e-5)
    history = pd.read_csv(out / "history.csv")
    assert {"iou", "val_iou", "val_iou_background", "val_f1_boundary"} <= set(history)
    text = summary.describe()
    assert "likeliest class" in text and "mean IoU" in text and "argmax" in text


def test_multiclass_takes_the_later_class_where_classes_overlap(
    multiclass_model, tiny_chips, tmp_path
):
    """Boundary pixels inside parcels are boundary in the order parcels,boundary and parcels in
    the order boundary,parcels; the true pixels per class (confusion rows) say so."""
    out = tmp_path / "m"
    train(
        tiny_chips, out, task="multiclass", classes=["boundary", "parcels"], epochs=1,
        **TINY_TRAINING,
    )  # fmt: skip
    card = read_model_card(out)
    assert card["classes"] == ["background", "boundary", "parcels"]
    swapped = np.array(card["metrics"]["val_confusion"]).sum(axis=1)
    default = np.array(read_model_card(multiclass_model[0])["metrics"]["val_confusion"]).sum(1)
    background, parcels, boundary = default
    assert swapped[0] == background  # the union of the classes does not depend on the order
    assert 0 < swapped[1] < boundary  # only boundary pixels outside parcels stay boundary
    assert swapped[2] - parcels == boundary - swapped[1] > 0


def one_class_everywhere(tiny_chips, tmp_path):
    chips = tmp_path / "all_parcels"
    shutil.copytree(tiny_chips, chips)
    record = json.loads((chips / "dataset.json").read_text())
    record["class_frequencies"]["parcels"] = 1.0
    (chips / "dataset.json").write_text(json.dumps(record))
    return chips


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "multiclass", "--classes", "parcels"], ["background pixels", "parcels"]),
        (["--encoder", "vgg17"], ["vgg17", "vgg16", "resnet50"]),
        (["--freeze-encoder-epochs", "2"], ["--freeze-encoder-epochs", "pretrained encoder"]),
        (["--encoder-weights", "none"], ["--encoder-weights", "pretrained encoder"]),
        (["--encoder", "mobilenetv2", "--encoder-weights", "missing.weights.h5"], ["missing"]),
    ],
)
def test_bad_task_and_encoder_options_leave_nothing_behind(tiny_chips, tmp_path, args, words):
    chips = one_class_everywhere(tiny_chips, tmp_path) if "--task" in args else tiny_chips
    out = tmp_path / "m"
    result = run("train", chips, "--out", out, "--epochs", "1", "--depth", "2", *args)
    assert_one_line_error(result, *words)
    assert not out.exists() and not partial_directory(out).exists()


def test_multiclass_refuses_a_regression_target(tiny_multitask_chips, tmp_path):
    out = tmp_path / "m"
    args = ["--task", "multiclass", "--classes", "parcels,distance"]
    result = run("train", tiny_multitask_chips, "--out", out, *args)
    assert_one_line_error(result, "distance", "regression")
    assert not out.exists() and not partial_directory(out).exists()


def test_multiclass_without_classes_leaves_regression_targets_out(tiny_multitask_chips, tmp_path):
    train(tiny_multitask_chips, tmp_path / "m", task="multiclass", epochs=1, **TINY_TRAINING)
    assert read_model_card(tmp_path / "m")["classes"] == ["background", "parcels", "boundary"]


def test_frozen_encoder_then_the_whole_network_at_a_tenth_of_the_rate(tiny_chips, tmp_path):
    """Then predict, in float32 and bfloat16, with the encoder model."""
    out = tmp_path / "m"
    settings = dict(TINY_TRAINING, depth=4, lr=2e-3)
    train(
        tiny_chips, out, encoder="mobilenetv2", encoder_weights="none", freeze_encoder_epochs=1,
        epochs=2, **settings,
    )  # fmt: skip
    card = read_model_card(out)
    assert card["model"]["encoder"] == "mobilenetv2" and card["input_multiple"] == 32
    assert card["encoder"]["name"] == "mobilenetv2" and card["encoder"]["weights"] == "none"
    assert card["encoder"]["freeze_epochs"] == 1
    assert card["encoder"]["unfrozen_lr"] == pytest.approx(2e-4)
    history = pd.read_csv(out / "history.csv")
    assert history["learning_rate"].tolist() == pytest.approx([2e-3, 2e-4])
    model = keras.models.load_model(out / "model.keras")
    assert model.get_layer("encoder").trainable
    assert model(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 64, 64, 2)

    # predict rebuilds the encoder model under mixed precision from the card alone
    import rasterio

    from geoseg import predict

    image = tiny_chips.parent / "scene" / "image.tif"
    bands = []
    for precision in ("off", "on"):
        pred = tmp_path / f"pred-{precision}.tif"
        predict(image, out, pred, device="cpu", mixed_precision=precision, block_size=256)
        with rasterio.open(pred) as src:
            bands.append(src.read().astype(np.int16))
    assert np.abs(bands[0] - bands[1]).mean() < 3.0


def test_multiclass_model_from_train_to_class_map_polygons_and_scores(
    multiclass_model, tiny_chips, tmp_path
):
    """The CLI chain a user runs: predict --class-map, vectorize it, evaluate it."""
    import geopandas as gpd
    import rasterio

    out, _ = multiclass_model
    scene = tiny_chips.parent / "scene"
    pred, class_map = tmp_path / "pred.tif", tmp_path / "classes.tif"
    result = run(
        "predict", scene / "image.tif", "--model", out, "-o", pred, "--class-map", class_map,
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(pred) as src:
        probabilities = src.read()
        assert src.descriptions == ("background", "parcels", "boundary")
    with rasterio.open(class_map) as src:
        codes, colours = src.read(1), src.colormap(1)
    assert set(np.unique(codes)) <= {0, 1, 2} and {0, 1, 2} <= set(colours)
    # the class of a pixel is its likeliest band (up to ties after quantising to uint8)
    likeliest = probabilities.max(axis=0)
    assert (probabilities[codes, *np.indices(codes.shape)] >= likeliest - 1).all()

    polygons = tmp_path / "classes.gpkg"
    assert run("vectorize", class_map, "-o", polygons).exit_code == 0
    frame = gpd.read_file(polygons)
    assert set(frame["class"]) <= {"parcels", "boundary"} and len(frame) > 0

    # scored against its own polygons, the class map is exact: vectorizing loses no pixel
    scores = tmp_path / "scores.json"
    result = run(
        "evaluate", class_map, "--truth", polygons, "--class-field", "class", "--json", scores,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    confusion = json.loads(scores.read_text())["confusion"]
    assert confusion["classes"] == ["background", "parcels", "boundary"]
    matrix = np.array(confusion["matrix"])
    assert (matrix == np.diag(np.diag(matrix))).all() and confusion["mean_iou"] == 1.0
