"""Class-weighted binary cross-entropy, soft Dice, their sum, and masked per-class metrics.

Masks hold 0 or 1 per class and 255 where a pixel is to be ignored; ignored pixels count in
neither the loss nor the metrics. Everything is computed in float32, also under mixed precision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from geoseg.errors import ParameterError

LOSSES = ("bce_dice", "bce", "dice")
WEIGHT_CAP = 50.0
"""Largest automatic positive-class weight, so a very rare class does not swamp the loss."""

_EPSILON = 1e-7
_DICE_SMOOTH = 1.0


def auto_class_weights(frequencies: Sequence[float], cap: float = WEIGHT_CAP) -> list[float]:
    """Positive weight per class from its pixel frequency: (1 - f) / f, clipped to [1, cap].

    At (1 - f) / f the positives of a class weigh as much in total as its negatives.
    """
    weights = []
    for f in frequencies:
        balanced = (1.0 - f) / f if f > 0 else cap
        weights.append(float(min(max(balanced, 1.0), cap)))
    return weights


def _valid_and_target(y_true):
    y_true = ops.cast(y_true, "float32")
    valid = ops.cast(y_true <= 1.0, "float32")
    return valid, y_true * valid


@keras.saving.register_keras_serializable(package="geoseg")
class SegmentationLoss(keras.losses.Loss):
    """``bce_dice``: mean over classes of weighted BCE + ``dice_weight`` x (1 - soft Dice).

    ``bce`` is unweighted binary cross-entropy alone, ``dice`` soft Dice alone. BCE is averaged
    over the valid pixels of the batch; Dice is computed over the whole batch per class.
    """

    def __init__(
        self,
        kind: str = "bce_dice",
        pos_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        name: str = "segmentation_loss",
        **kwargs,
    ):
        if kind not in LOSSES:
            raise ParameterError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if dice_weight < 0:
            raise ParameterError(f"dice weight must be >= 0, not {dice_weight}")
        super().__init__(name=name, **kwargs)
        self.kind = kind
        self.pos_weights = None if pos_weights is None else [float(w) for w in pos_weights]
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        valid, target = _valid_and_target(y_true)
        prob = ops.clip(ops.cast(y_pred, "float32"), _EPSILON, 1.0 - _EPSILON)
        total = ops.zeros((), "float32")
        if self.kind in ("bce_dice", "bce"):
            total = total + ops.mean(self._bce(valid, target, prob))
        if self.kind in ("bce_dice", "dice"):
            weight = self.dice_weight if self.kind == "bce_dice" else 1.0
            total = total + weight * ops.mean(1.0 - soft_dice(valid, target, prob))
        return total

    def _bce(self, valid, target, prob):
        """Per-class BCE averaged over valid pixels; positives weighted in ``bce_dice``."""
        positive = target * ops.log(prob)
        if self.kind == "bce_dice" and self.pos_weights is not None:
            positive = positive * ops.convert_to_tensor(self.pos_weights, "float32")
        per_pixel = -(positive + (1.0 - target) * ops.log(1.0 - prob)) * valid
        axes = tuple(range(len(per_pixel.shape) - 1))
        return ops.sum(per_pixel, axis=axes) / ops.maximum(ops.sum(valid, axis=axes), 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, pos_weights=self.pos_weights, dice_weight=self.dice_weight)
        return config


def soft_dice(valid, target, prob):
    """Soft Dice per class over all valid pixels of the batch (1 = perfect)."""
    axes = tuple(range(len(prob.shape) - 1))
    intersection = ops.sum(valid * prob * target, axis=axes)
    sizes = ops.sum(valid * prob, axis=axes) + ops.sum(target, axis=axes)
    return (2.0 * intersection + _DICE_SMOOTH) / (sizes + _DICE_SMOOTH)


METRICS = ("iou", "f1", "precision", "recall")


@keras.saving.register_keras_serializable(package="geoseg")
class MaskedScore(keras.metrics.Metric):
    """IoU, F1, precision or recall of one class (or their mean over classes) at a threshold."""

    def __init__(
        self,
        kind: str,
        classes: int,
        class_index: int | None = None,
        threshold: float = 0.5,
        name: str | None = None,
        **kwargs,
    ):
        if kind not in METRICS:
            raise ParameterError(f"unknown metric {kind!r}; choose one of {', '.join(METRICS)}")
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.classes, self.class_index = kind, classes, class_index
        self.threshold = float(threshold)
        self.counts = {
            c: self.add_variable(shape=(classes,), initializer="zeros", name=c, dtype="float32")
            for c in ("tp", "fp", "fn")
        }

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid, target = _valid_and_target(y_true)
        predicted = ops.cast(ops.cast(y_pred, "float32") >= self.threshold, "float32") * valid
        axes = tuple(range(len(predicted.shape) - 1))
        self.counts["tp"].assign_add(ops.sum(predicted * target, axis=axes))
        self.counts["fp"].assign_add(ops.sum(predicted * (1.0 - target), axis=axes))
        self.counts["fn"].assign_add(ops.sum((1.0 - predicted) * target, axis=axes))

    def result(self):
        tp, fp, fn = (self.counts[c] for c in ("tp", "fp", "fn"))
        numerator, denominator = {
            "iou": (tp, tp + fp + fn),
            "f1": (2 * tp, 2 * tp + fp + fn),
            "precision": (tp, tp + fp),
            "recall": (tp, tp + fn),
        }[self.kind]
        per_class = ops.divide_no_nan(numerator, denominator)
        if self.class_index is None:
            return ops.mean(per_class)
        return per_class[self.class_index]

    def reset_state(self):
        for variable in self.counts.values():
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        config = super().get_config()
        config.update(
            kind=self.kind,
            classes=self.classes,
            class_index=self.class_index,
            threshold=self.threshold,
        )
        return config


def metric_key(kind: str, class_name: str) -> str:
    """The name a per-class metric is logged under, e.g. ``iou_boundary`` (safe characters)."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]', '_', class_name)}"


def training_metrics(class_names: Sequence[str]) -> list[MaskedScore]:
    """Mean IoU plus IoU and F1 per class, at threshold 0.5 (logged every epoch)."""
    n = len(class_names)
    metrics = [MaskedScore("iou", n, name="iou")]
    for i, name in enumerate(class_names):
        metrics.append(MaskedScore("iou", n, i, name=metric_key("iou", name)))
        metrics.append(MaskedScore("f1", n, i, name=metric_key("f1", name)))
    return metrics


def resolve_class_weights(
    spec: str | Sequence[float], class_names: Sequence[str], frequencies: Mapping[str, float]
) -> tuple[list[float], str]:
    """``auto`` or explicit weights -> (one weight per class, how they were chosen)."""
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return auto_class_weights([frequencies[c] for c in class_names]), "auto"
    if isinstance(spec, str):
        try:
            spec = [float(w) for w in spec.split(",")]
        except ValueError:
            raise ParameterError(
                f"class weights must be 'auto' or numbers like 10,1 (got {spec!r})"
            ) from None
    weights = [float(w) for w in spec]
    if len(weights) != len(class_names):
        raise ParameterError(
            f"{len(weights)} class weights given for {len(class_names)} classes "
            f"({', '.join(class_names)})"
        )
    if any(not w > 0 for w in weights):
        raise ParameterError("class weights must be positive")
    return weights, "explicit"
