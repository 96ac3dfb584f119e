"""Multi-task training: extent, boundary and a regression target (distance) in one U-Net."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import rasterio

from geoseg import train
from geoseg.contracts import PredictionTags, read_model_card
from geoseg.errors import ParameterError
from geoseg.inference.predictor import predict
from geoseg.io.vector_files import read_layer_metadata
from geoseg.metrics.scores import RegressionErrors
from geoseg.models.forward import ForwardSpec, load_inference_model
from geoseg.training.dataset import make_dataset, open_chips

TINY = dict(
    base_filters=4, depth=2, batch_size=8, mixed_precision="off", folds=1, epoch_chips=0
)  # one pass per epoch: tests check behaviour, not the fit
NAMES = ["parcels", "boundary", "distance"]


def test_distance_is_decoded_to_0_1_and_classes_stay_0_1(tiny_multitask_chips):
    chips = open_chips(tiny_multitask_chips)
    assert chips.kinds([0, 1, 2]) == ["class", "class", "regression"]
    _, masks = next(iter(make_dataset(chips, "val", 4, [0, 1, 2], training=False)))
    masks = masks.numpy()
    assert set(np.unique(masks[..., :2])) <= {0.0, 1.0, 255.0}
    distance = masks[..., 2][masks[..., 2] != 255]
    assert distance.min() == 0.0 and 0.2 < distance.max() <= 1.0
    with rasterio.open(chips.files["val"][0][1]) as src:
        stored = src.read(3)
    first = masks[0, ..., 2]
    np.testing.assert_allclose(first[stored != 255], stored[stored != 255] / 254, atol=1e-6)


def test_card_records_targets_losses_thresholds_and_regression_metrics(tiny_multitask_model):
    card = read_model_card(tiny_multitask_model)
    assert card["classes"] == NAMES
    assert card.targets["distance"] == {
        "kind": "regression",
        "role": "distance",
        "loss": "tanimoto",
    }
    assert card.targets["boundary"]["loss"] == "bce_dice"
    assert card.roles == {"extent": "parcels", "boundary": "boundary", "distance": "distance"}
    assert set(card["threshold"]) == set(NAMES) and card["threshold"]["distance"] == 0.5
    assert set(card["class_weights"]) == {"parcels", "boundary"}  # no weight from a mean value
    val = card["metrics"]["val"]
    assert set(val["distance"]) == {"mae", "rmse"} and 0 <= val["distance"]["mae"] <= 1
    assert set(val["boundary"]) == {"iou", "f1", "precision", "recall"}
    assert card["model"]["heads"] == NAMES
    history = pd.read_csv(tiny_multitask_model / "history.csv")
    assert {"mae_distance", "val_mae_distance", "val_f1_boundary"} <= set(history.columns)
    assert "iou_distance" not in history.columns and "f1_distance" not in history.columns


def test_one_output_of_named_heads_loads_with_plain_keras(tiny_multitask_model):
    model = keras.models.load_model(tiny_multitask_model / "model.keras")
    names = {layer.name for layer in model.layers}
    assert {"head_parcels", "head_boundary", "head_distance", "head"} <= names
    y = model(np.random.default_rng(0).random((1, 64, 128, 3), np.float32)).numpy()
    assert y.shape == (1, 64, 128, 3) and ((y >= 0) & (y <= 1)).all()


def test_bfloat16_rebuild_from_the_card_keeps_the_heads(tiny_multitask_model):
    card = read_model_card(tiny_multitask_model)
    spec = ForwardSpec.from_card(tiny_multitask_model, card, batch_size=2)
    hash(spec)  # the forward pass is cached per spec
    x = np.random.default_rng(1).random((2, 64, 64, 3), np.float32)
    exact = load_inference_model(tiny_multitask_model, dict(spec.model), "float32")
    fast = load_inference_model(tiny_multitask_model, dict(spec.model), "mixed_bfloat16")
    assert fast.get_layer("head_distance") is not None
    difference = np.abs(np.asarray(fast(x), np.float32) - exact(x).numpy())
    assert difference.mean() < 0.02


def test_predict_writes_every_target_with_descriptions_and_tags(
    tiny_multitask_model, tiny_chips, tmp_path
):
    image = tiny_chips.parent / "scene" / "image.tif"
    out = tmp_path / "pred.tif"
    predict(image, tiny_multitask_model, out, block_size=256, overlap=16)
    with rasterio.open(out) as src:
        assert src.count == 3 and src.descriptions == tuple(NAMES)
        distance = src.read(3)
    assert distance.dtype == np.uint8 and distance.max() > 0
    tags = PredictionTags.read(out)
    assert tags.classes == tuple(NAMES)
    assert tags.targets["distance"]["kind"] == "regression"
    assert tags.roles == {"extent": "parcels", "boundary": "boundary", "distance": "distance"}
    assert tags.thresholds["distance"] == 0.5
    summary = predict(
        image, tiny_multitask_model, tmp_path / "again.tif", block_size=256, overlap=16,
        vectors=tmp_path / "parcels.gpkg", mode="parcels",
    )  # fmt: skip
    assert read_layer_metadata(tmp_path / "parcels.gpkg")["geoseg_delineation"] == "watershed"
    assert "by a watershed of the field extent" in summary.describe()


def test_regression_target_alone_monitored_by_its_error(tiny_multitask_chips, tmp_path):
    summary = train(
        tiny_multitask_chips, tmp_path / "m", epochs=1, classes=["distance"],
        monitor="val_mae_distance", **TINY,
    )  # fmt: skip
    card = read_model_card(tmp_path / "m")
    assert card["classes"] == ["distance"] and card["class_weights"] == {}
    assert card["threshold"] == {"distance": 0.5}
    model = keras.models.load_model(tmp_path / "m" / "model.keras")
    assert "head_logits" in {layer.name for layer in model.layers}  # one target: one conv
    text = summary.describe()
    assert "distance" in text and "MAE" in text


def test_class_weights_are_given_for_class_targets_only(tiny_multitask_chips, tmp_path):
    with pytest.raises(ParameterError, match="2 classes"):
        train(tiny_multitask_chips, tmp_path / "m", epochs=1, class_weights="5,1,1", **TINY)
    with pytest.raises(ParameterError, match="cannot monitor"):
        train(tiny_multitask_chips, tmp_path / "m", epochs=1, monitor="val_iou_distance", **TINY)
    assert not (tmp_path / "m").exists()


def test_regression_errors_are_quantised_like_the_rasters():
    errors = RegressionErrors(["distance"])
    values = np.array([0.5, 1.0, 0.0, 0.3], np.float32).reshape(1, 2, 2, 1)
    truth = np.array([0.5, 0.5, 255, 0.3], np.float32).reshape(1, 2, 2, 1)
    errors.add(values, truth)
    expected = (abs(128 / 255 - 0.5) + 0.5 + abs(77 / 255 - 0.3)) / 3
    assert errors.scores()["distance"]["mae"] == pytest.approx(expected)
    assert json.dumps(errors.scores())  # plain floats for the card
