"""Loss and metric values against small cases computed by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from geoseg.errors import ParameterError
from geoseg.training.losses import (
    WEIGHT_CAP,
    MaskedMAE,
    MaskedScore,
    SegmentationLoss,
    auto_class_weights,
    channel_weights,
    resolve_class_weights,
    training_metrics,
)

# One 2x2 image, one class: two positives, one negative, one ignored pixel.
Y = np.array([1, 0, 255, 1], np.float32).reshape(1, 2, 2, 1)
P = np.array([0.8, 0.3, 0.5, 0.6], np.float32).reshape(1, 2, 2, 1)


def loss_value(y, p, **kwargs) -> float:
    return float(SegmentationLoss(**kwargs)(y, p))


def test_weighted_bce_plus_dice_by_hand():
    bce = -(2 * math.log(0.8) + math.log(0.7) + 2 * math.log(0.6)) / 3
    dice = (2 * (0.8 + 0.6) + 1) / ((0.8 + 0.3 + 0.6) + 2 + 1)
    expected = bce + 0.5 * (1 - dice)
    got = loss_value(Y, P, kind="bce_dice", pos_weights=[2.0], dice_weight=0.5)
    assert got == pytest.approx(expected, rel=1e-5)


def test_plain_bce_ignores_class_weights_and_dice_alone():
    bce = -(math.log(0.8) + math.log(0.7) + math.log(0.6)) / 3
    assert loss_value(Y, P, kind="bce", pos_weights=[9.0]) == pytest.approx(bce, rel=1e-5)
    dice = (2 * 1.4 + 1) / (1.7 + 2 + 1)
    assert loss_value(Y, P, kind="dice", pos_weights=[9.0]) == pytest.approx(1 - dice, rel=1e-5)


@pytest.mark.parametrize("kind", ["bce_dice", "bce", "dice"])
def test_ignored_pixels_contribute_nothing(kind):
    changed = P.copy()
    changed[0, 1, 0, 0] = 0.999  # the pixel marked 255
    assert loss_value(Y, changed, kind=kind) == pytest.approx(loss_value(Y, P, kind=kind))


def test_classes_are_averaged_with_their_own_weights():
    y = np.concatenate([Y, 1 - np.where(Y == 255, 0, Y)], axis=-1)
    y[..., 1][Y[..., 0] == 255] = 255
    p = np.concatenate([P, 1 - P], axis=-1)
    both = loss_value(y, p, pos_weights=[2.0, 3.0])
    first = loss_value(y[..., :1], p[..., :1], pos_weights=[2.0])
    second = loss_value(y[..., 1:], p[..., 1:], pos_weights=[3.0])
    assert both == pytest.approx((first + second) / 2, rel=1e-5)


def test_float16_predictions_are_scored_in_float32():
    y = np.ones((1, 512, 512, 1), np.float32)  # Dice sums of 262 144 overflow float16
    p = np.full((1, 512, 512, 1), 0.9, np.float16)
    value = SegmentationLoss()(y, p)
    assert keras.backend.standardize_dtype(value.dtype) == "float32" and np.isfinite(float(value))
    assert float(value) == pytest.approx(loss_value(y, p.astype(np.float32)), rel=1e-3)


def test_auto_weights_are_inverse_frequency_with_a_cap():
    assert auto_class_weights([0.02, 0.5, 0.9, 1e-4, 0.0]) == pytest.approx(
        [49.0, 1.0, 1.0, WEIGHT_CAP, WEIGHT_CAP]
    )
    weights, source = resolve_class_weights("auto", ["b"], {"b": 0.2})
    assert weights == pytest.approx([4.0]) and source == "auto"
    assert resolve_class_weights("10,2", ["a", "b"], {}) == ([10.0, 2.0], "explicit")


@pytest.mark.parametrize("spec", ["1,2,3", "x", "0,1"])
def test_bad_class_weights_are_refused(spec):
    with pytest.raises(ParameterError):
        resolve_class_weights(spec, ["a", "b"], {})


def test_masked_scores_match_counts():
    # tp = 1 (0.8), fn = 1 (0.4 < 0.5), fp = 1 (0.7), tn = 0; 255 ignored even at 0.9.
    y = np.array([1, 1, 0, 255], np.float32).reshape(1, 2, 2, 1)
    p = np.array([0.8, 0.4, 0.7, 0.9], np.float32).reshape(1, 2, 2, 1)
    expected = {"iou": 1 / 3, "f1": 0.5, "precision": 0.5, "recall": 0.5}
    for kind, value in expected.items():
        metric = MaskedScore(kind, classes=1, class_index=0)
        metric.update_state(y, p)
        assert float(metric.result()) == pytest.approx(value), kind


# One 2x2 regression target (decoded to 0..1): three valid pixels, one ignored.
D = np.array([1.0, 0.0, 255, 0.5], np.float32).reshape(1, 2, 2, 1)
Q = np.array([0.8, 0.2, 0.9, 0.5], np.float32).reshape(1, 2, 2, 1)


def tanimoto_by_hand(t, p):
    product = sum(a * b for a, b in zip(t, p))
    return (product + 1) / (sum(a * a for a in t) + sum(b * b for b in p) - product + 1)


def test_regression_loss_is_one_minus_tanimoto_with_complement_by_hand():
    t, p = [1.0, 0.0, 0.5], [0.8, 0.2, 0.5]
    complement = tanimoto_by_hand([1 - a for a in t], [1 - b for b in p])
    expected = 1 - 0.5 * (tanimoto_by_hand(t, p) + complement)
    got = loss_value(D, Q, kinds=["regression"], pos_weights=[9.0])
    assert got == pytest.approx(expected, rel=1e-5)
    assert 0 <= got <= 1 and loss_value(D, np.where(D > 1, 0.3, D), kinds=["regression"]) < 1e-6
    changed = Q.copy()
    changed[0, 1, 0, 0] = 0.01  # the ignored pixel
    assert loss_value(D, changed, kinds=["regression"]) == pytest.approx(got)


def test_class_and_regression_channels_are_averaged():
    y, p = np.concatenate([Y, D], axis=-1), np.concatenate([P, Q], axis=-1)
    both = loss_value(y, p, pos_weights=[2.0, 1.0], kinds=["class", "regression"])
    first = loss_value(Y, P, pos_weights=[2.0])
    second = loss_value(D, Q, kinds=["regression"])
    assert both == pytest.approx((first + second) / 2, rel=1e-5)


def test_regression_loss_stays_float32_and_finite_under_float16():
    y = np.full((1, 512, 512, 1), 0.7, np.float32)
    p = np.full((1, 512, 512, 1), 0.6, np.float16)
    value = SegmentationLoss(kinds=["regression"])(y, p)
    assert keras.backend.standardize_dtype(value.dtype) == "float32" and np.isfinite(float(value))


def test_loss_config_carries_the_kinds():
    loss = SegmentationLoss(pos_weights=[3.0, 1.0], kinds=["class", "regression"])
    again = SegmentationLoss.from_config(loss.get_config())
    assert again.kinds == ["class", "regression"] and again.pos_weights == [3.0, 1.0]
    with pytest.raises(ParameterError):
        SegmentationLoss(kinds=["class", "distance"])


def test_masked_mae_and_metrics_per_kind():
    metric = MaskedMAE(0)
    metric.update_state(D, Q)
    assert float(metric.result()) == pytest.approx((0.2 + 0.2 + 0.0) / 3)
    names = [m.name for m in training_metrics(["parcels", "distance"], ["class", "regression"])]
    assert names == ["iou", "iou_parcels", "f1_parcels", "mae_distance"]
    mean = training_metrics(["a", "d"], ["class", "regression"])[0]
    mean.update_state(np.concatenate([Y, D], -1), np.concatenate([P, Q], -1))
    assert float(mean.result()) == pytest.approx(1.0)  # the class channel's IoU only
    assert channel_weights(["class", "regression", "class"], [5.0, 2.0]) == [5.0, 1.0, 2.0]
