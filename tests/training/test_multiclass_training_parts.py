"""Multiclass training parts: one-hot targets from the chips, the categorical loss, the argmax
metrics and the automatic class weights."""

from __future__ import annotations

import math
import shutil

import keras
import numpy as np
import pytest
import rasterio
import tensorflow as tf

from geoseg.errors import ParameterError
from geoseg.metrics.scores import ConfusionMatrix
from geoseg.training.dataset import (
    make_dataset,
    multiclass_codes,
    one_hot_targets,
    open_chips,
    read_chip,
)
from geoseg.training.losses import (
    MIN_BACKGROUND_SHARE,
    WEIGHT_CAP,
    CategoricalSegmentationLoss,
    MulticlassScore,
    auto_multiclass_weights,
    multiclass_frequencies,
    multiclass_metrics,
    resolve_multiclass_weights,
)

# --- targets --------------------------------------------------------------------------------

# Pixels of three classes (in --classes order) and the code each must get.
PIXELS = {
    (0, 0, 0): 0,
    (1, 0, 0): 1,
    (1, 1, 0): 2,  # an overlap: the later class wins
    (1, 0, 1): 3,
    (0, 1, 1): 3,
    (1, 1, 1): 3,
    (1, 255, 0): 255,  # any ignored band ignores the pixel
    (0, 0, 255): 255,
    (255, 255, 255): 255,
}


def test_codes_follow_the_last_positive_class_and_spread_ignore():
    mask = np.array(list(PIXELS), np.uint8).reshape(3, 3, 3)
    expected = np.array(list(PIXELS.values()), np.uint8).reshape(3, 3)
    codes = multiclass_codes(mask)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(multiclass_codes(np.moveaxis(mask, -1, 0), axis=0), expected)


def test_one_hot_targets_put_255_in_every_channel_of_ignored_pixels():
    codes = np.array([0, 2, 255, 1], np.uint8).reshape(1, 4, 1)
    targets = one_hot_targets(codes, 3).numpy()
    assert targets.dtype == np.float32 and targets.shape == (1, 4, 3)
    np.testing.assert_array_equal(targets[0], [[1, 0, 0], [0, 0, 1], [255, 255, 255], [0, 1, 0]])


def expected_one_hot(pair, class_bands) -> np.ndarray:
    """The one-hot targets of one chip, computed with numpy from its mask file."""
    codes = multiclass_codes(read_chip(*pair, class_bands)[2])
    one_hot = np.eye(len(class_bands) + 1, dtype=np.float32)[np.minimum(codes, len(class_bands))]
    one_hot[codes == 255] = 255
    return one_hot


@pytest.fixture(scope="module")
def chips_with_ignored_pixels(tiny_chips, tmp_path_factory):
    """``tiny_chips`` with some pixels ignored in one band only: boundary's first rows and
    parcels' first columns."""
    root = tmp_path_factory.mktemp("ignored") / "chips"
    shutil.copytree(tiny_chips, root)
    for path in (root / "masks").glob("*.tif"):
        with rasterio.open(path, "r+") as dst:
            mask = dst.read()
            mask[1, :6, :] = 255
            mask[0, :, :3] = 255
            dst.write(mask)
    return root


@pytest.mark.parametrize("class_bands", [[0, 1], [1, 0]])
def test_pipeline_yields_the_numpy_one_hot_targets(chips_with_ignored_pixels, class_bands):
    chips = open_chips(chips_with_ignored_pixels)
    dataset = make_dataset(chips, "val", 4, class_bands, training=False, task="multiclass")
    _, masks = next(iter(dataset))
    assert masks.shape == (4, 64, 64, 3) and masks.dtype == tf.float32
    expected = np.stack([expected_one_hot(pair, class_bands) for pair in chips.files["val"][:4]])
    np.testing.assert_array_equal(masks.numpy(), expected)
    raw = np.stack([read_chip(*pair, class_bands)[2] for pair in chips.files["val"][:4]])
    overlap, ignored = (raw == 1).all(axis=-1), (raw == 255).any(axis=-1)
    assert overlap.any() and (masks.numpy()[overlap][:, 2] == 1).all()  # the later class
    assert ignored.any() and (masks.numpy()[ignored] == 255).all()


def test_augmented_epoch_keeps_the_class_counts(chips_with_ignored_pixels):
    """Flips and rotations move the codes as they move the masks: the counts over an epoch
    are those of the chips as stored."""
    chips = open_chips(chips_with_ignored_pixels)
    dataset = make_dataset(chips, "train", 8, [0, 1], training=True, seed=3, task="multiclass")
    masks = np.concatenate([m.numpy() for _, m in dataset])
    valid = (masks <= 1).all(axis=-1)
    assert ((masks == 255).all(axis=-1) == ~valid).all()
    np.testing.assert_array_equal(masks[valid].sum(axis=-1), 1.0)
    expected = np.stack([expected_one_hot(pair, [0, 1]) for pair in chips.files["train"]])
    np.testing.assert_array_equal(masks.sum(axis=(0, 1, 2)), expected.sum(axis=(0, 1, 2)))


def test_regression_targets_cannot_be_classes(tiny_multitask_chips):
    chips = open_chips(tiny_multitask_chips)
    with pytest.raises(ParameterError, match="'distance' is a regression target") as error:
        make_dataset(chips, "train", 4, [0, 2], training=True, task="multiclass")
    assert "\n" not in str(error.value)
    with pytest.raises(ParameterError, match="unknown task"):
        make_dataset(chips, "train", 4, [0], training=True, task="softmax")


# --- loss ------------------------------------------------------------------------------------

# One 2x2 image of three classes (background first): codes 0, 1, 2 and an ignored pixel.
Y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [255, 255, 255]], np.float32).reshape(1, 2, 2, 3)
P = np.array(
    [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]], np.float32
).reshape(1, 2, 2, 3)


def loss_value(y, p, **kwargs) -> float:
    return float(CategoricalSegmentationLoss(**kwargs)(y, p))


def test_weighted_cross_entropy_plus_dice_by_hand():
    weights = [1.0, 2.0, 4.0]
    true_prob = [0.7, 0.6, 0.4]
    ce = -sum(w * math.log(p) for w, p in zip(weights, true_prob)) / sum(weights)
    # Per class over the three valid pixels: (2 x p of the true pixel + 1) / (sum p + 1 + 1).
    dice = [(2 * 0.7 + 1) / (1.2 + 2), (2 * 0.6 + 1) / (1.2 + 2), (2 * 0.4 + 1) / (0.6 + 2)]
    expected = ce + 0.5 * (1 - sum(dice) / 3)
    got = loss_value(Y, P, class_weights=weights, dice_weight=0.5)
    assert got == pytest.approx(expected, rel=1e-5)
    plain_ce = -sum(math.log(p) for p in true_prob) / 3
    assert loss_value(Y, P, class_weights=weights, kind="ce") == pytest.approx(plain_ce, rel=1e-5)
    assert loss_value(Y, P, kind="dice") == pytest.approx(1 - sum(dice) / 3, rel=1e-5)


def test_a_perfect_prediction_costs_nothing():
    perfect = np.where(Y > 1, 1 / 3, Y)
    assert loss_value(Y, perfect, kind="ce") == pytest.approx(0.0, abs=1e-5)
    assert loss_value(Y, perfect, kind="dice") == pytest.approx(0.0, abs=1e-5)
    assert loss_value(Y, perfect, class_weights=[1, 5, 9]) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["ce_dice", "ce", "dice"])
def test_ignored_pixels_change_nothing(kind):
    changed = P.copy()
    changed[0, 1, 1] = [0.98, 0.01, 0.01]  # the ignored pixel
    before = loss_value(Y, P, class_weights=[1, 2, 3], kind=kind)
    assert loss_value(Y, changed, class_weights=[1, 2, 3], kind=kind) == pytest.approx(before)


def test_weights_move_the_loss_towards_the_weighted_class():
    # Class 2 is the worst predicted (0.4): weighing it more raises the cross-entropy.
    even = loss_value(Y, P, class_weights=[1, 1, 1], kind="ce_dice", dice_weight=0)
    heavier = loss_value(Y, P, class_weights=[1, 1, 5], kind="ce_dice", dice_weight=0)
    lighter = loss_value(Y, P, class_weights=[5, 1, 1], kind="ce_dice", dice_weight=0)
    assert lighter < even < heavier < -math.log(0.4)
    scaled = loss_value(Y, P, class_weights=[10, 10, 50], kind="ce_dice", dice_weight=0)
    assert scaled == pytest.approx(heavier)  # only the weights' ratios matter


def test_loss_is_float32_under_mixed_bfloat16():
    y = np.zeros((2, 256, 256, 3), np.float32)
    y[..., 1] = 1  # Dice sums of 131 072 pixels lose precision in bfloat16
    p = np.tile(np.array([0.1, 0.8, 0.1], np.float32), (2, 256, 256, 1))
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        value = CategoricalSegmentationLoss([1.0, 2.0, 3.0])(y, tf.cast(p, tf.bfloat16))
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    expected = loss_value(y, p.astype(np.float32), class_weights=[1.0, 2.0, 3.0])
    assert float(value) == pytest.approx(expected, rel=1e-2)


def test_loss_names_config_and_bad_settings():
    loss = CategoricalSegmentationLoss([1.0, 2.5], dice_weight=0.3, kind="bce_dice")
    again = CategoricalSegmentationLoss.from_config(loss.get_config())
    assert (again.kind, again.class_weights, again.dice_weight) == ("ce_dice", [1.0, 2.5], 0.3)
    assert CategoricalSegmentationLoss(kind="bce").kind == "ce"
    with pytest.raises(ParameterError, match="unknown multiclass loss"):
        CategoricalSegmentationLoss(kind="focal")
    with pytest.raises(ParameterError, match="positive"):
        CategoricalSegmentationLoss([1.0, 0.0])
    with pytest.raises(ParameterError, match="2 class weights for 3 classes"):
        CategoricalSegmentationLoss([1.0, 2.0])(Y, P)


def tiny_softmax_model(classes: int) -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(classes, 1, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def training_batch(seed: int = 0):
    """Images whose two bands decide each pixel's class (0, 1 or 2); a quarter ignored."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(16, 8, 8, 2)).astype(np.float32)
    codes = (images[..., 0] > 0).astype(int) + (images[..., 1] > 0.5)
    one_hot = np.eye(3, dtype=np.float32)[codes]
    one_hot[rng.random(codes.shape) < 0.25] = 255
    return images, one_hot


def test_training_lowers_the_loss_and_the_model_reloads(tmp_path):
    keras.utils.set_random_seed(1)
    model = tiny_softmax_model(3)
    names = ["background", "wheat", "barley"]
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=CategoricalSegmentationLoss([1.0, 2.0, 3.0]),
        metrics=multiclass_metrics(names),
    )
    images, targets = training_batch()
    history = model.fit(images, targets, batch_size=8, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["iou"][-1] > history["iou"][0]
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.loss.class_weights == [1.0, 2.0, 3.0]
    again = loaded.evaluate(images, targets, batch_size=8, verbose=0, return_dict=True)
    now = model.evaluate(images, targets, batch_size=8, verbose=0, return_dict=True)
    assert again["iou_barley"] == pytest.approx(now["iou_barley"])


# --- metrics ---------------------------------------------------------------------------------

NAMES = ["background", "wheat", "barley", "rye"]


def random_batch(rng, absent: int | None = None):
    """Softmax-like predictions and one-hot truth of 4 classes, 20 % of pixels ignored;
    ``absent`` is neither true nor predicted anywhere."""
    truth = rng.integers(0, 4, (2, 16, 16))
    logits = rng.normal(size=(2, 16, 16, 4)) + 1.5 * np.eye(4)[truth]
    if absent is not None:
        truth[truth == absent] = 0
        logits[..., absent] = -10
    prob = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    one_hot = np.eye(4, dtype=np.float32)[truth]
    ignored = rng.random(truth.shape) < 0.2
    one_hot[ignored] = 255
    return one_hot, prob.astype(np.float32), np.where(ignored, 255, truth), prob.argmax(-1)


@pytest.mark.parametrize("absent", [None, 3])
def test_metrics_match_a_confusion_matrix(absent):
    rng = np.random.default_rng(4)
    metrics = {m.name: m for m in multiclass_metrics(NAMES)}
    matrix = ConfusionMatrix(NAMES)
    for _ in range(2):  # the metrics accumulate over batches
        y, p, truth, predicted = random_batch(rng, absent)
        matrix.add(truth, predicted)
        for metric in metrics.values():
            metric.update_state(y, p)
    scores = matrix.scores()
    for name in NAMES:
        assert float(metrics[f"iou_{name}"].result()) == pytest.approx(scores[name]["iou"])
        assert float(metrics[f"f1_{name}"].result()) == pytest.approx(scores[name]["f1"])
    assert float(metrics["iou"].result()) == pytest.approx(matrix.mean_iou(skip_first=True))


def test_metric_names_and_config():
    names = [m.name for m in multiclass_metrics(["background", "winter wheat"])]
    assert names == [
        "iou",
        "iou_background",
        "f1_background",
        "iou_winter_wheat",
        "f1_winter_wheat",
    ]
    mean = multiclass_metrics(NAMES)[0]
    config = mean.get_config()
    assert "threshold" not in config and config["mean_of"] == [1, 2, 3]
    again = MulticlassScore.from_config(config)
    assert (again.name, again.kind, again.classes, again.mean_of) == ("iou", "iou", 4, [1, 2, 3])


# --- class weights ---------------------------------------------------------------------------


def test_auto_weights_grow_as_classes_get_rarer_up_to_the_cap():
    weights = auto_multiclass_weights([0.25, 0.5, 0.05, 1e-4, 0.0])
    assert weights == pytest.approx([2.0, 1.0, 10.0, WEIGHT_CAP, WEIGHT_CAP])
    assert auto_multiclass_weights([0.6, 0.3, 0.1], cap=4.0) == pytest.approx([1.0, 2.0, 4.0])


def test_shares_from_dataset_frequencies():
    frequencies = {"wheat": 0.2, "barley": 0.1, "rye": 0.5}
    assert multiclass_frequencies(frequencies, ["barley", "wheat"]) == pytest.approx(
        [0.7, 0.1, 0.2]
    )
    overlapping = multiclass_frequencies({"a": 0.8, "b": 0.4}, ["a", "b"])
    assert overlapping == pytest.approx([MIN_BACKGROUND_SHARE, 0.8, 0.4])
    with pytest.raises(ParameterError, match="'oats'"):
        multiclass_frequencies(frequencies, ["oats"])


def test_resolve_multiclass_weights():
    names = ["background", "wheat", "barley"]
    weights, source = resolve_multiclass_weights("auto", names, {"wheat": 0.3, "barley": 0.05})
    assert source == "auto" and weights == pytest.approx([1.0, 0.65 / 0.3, 13.0])
    assert resolve_multiclass_weights("1,2,3", names, {}) == ([1.0, 2.0, 3.0], "explicit")
    with pytest.raises(ParameterError, match="background first"):
        resolve_multiclass_weights("1,2", names, {})
    with pytest.raises(ParameterError, match="positive"):
        resolve_multiclass_weights([1.0, -2.0, 3.0], names, {})
