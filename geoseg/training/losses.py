"""Class-weighted binary cross-entropy, soft Dice, their sum, a bounded regression loss for
targets such as ``distance``, and masked per-target metrics; for a softmax model over mutually
exclusive classes (``--task multiclass``), class-weighted categorical cross-entropy plus
multi-class soft Dice, and argmax metrics.

Masks hold 0 or 1 per class target, a value in 0..1 per regression target (the data pipeline
decodes the stored 0..254), and 255 where a pixel is to be ignored; ignored pixels count in
neither the loss nor the metrics. Multiclass targets are one-hot (background first), 255 in
every channel of an ignored pixel. Everything is computed in float32, also under mixed
precision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from geoseg.errors import ParameterError

LOSSES = ("bce_dice", "bce", "dice")
REGRESSION_LOSS = "tanimoto"
"""The loss of regression targets: 1 - Tanimoto with complement (DECODE / ResUNet-a), in 0..1
like the Dice term, so a distance head stays balanced against the class heads."""
KINDS = ("class", "regression")
WEIGHT_CAP = 50.0
"""Largest automatic positive-class weight, so a very rare class does not swamp the loss."""
CATEGORICAL_LOSSES = ("ce_dice", "ce", "dice")
CATEGORICAL_NAMES = {"bce_dice": "ce_dice", "bce": "ce", "dice": "dice"}
"""Today's ``--loss`` names and their categorical counterparts."""
MIN_BACKGROUND_SHARE = 0.01
"""Smallest estimated background share (see :func:`multiclass_frequencies`)."""

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


def auto_multiclass_weights(frequencies: Sequence[float], cap: float = WEIGHT_CAP) -> list[float]:
    """One weight per class (background first) from its pixel share: the most frequent class's
    share / the class's, clipped to [1, cap] (cap for a class without pixels).

    Up to the cap, the pixels of every class then weigh as much in total as the most frequent
    class's, which keeps weight 1.
    """
    largest = max(frequencies)
    return [float(min(max(largest / f, 1.0), cap)) if f > 0 else float(cap) for f in frequencies]


def multiclass_frequencies(
    class_frequencies: Mapping[str, float], names: Sequence[str]
) -> list[float]:
    """Estimated pixel shares of background and of each class of ``names`` (in that order).

    ``class_frequencies`` (dataset.json) gives each class's share of the labelled pixels that
    are positive for it; they may overlap. The classes are assumed disjoint, as mutually
    exclusive classes are: each keeps its frequency (an overlap, given to the later class,
    is taken as rare) and background gets the rest, 1 - their sum, at least
    :data:`MIN_BACKGROUND_SHARE` (overlaps make that sum overstate the classes' union).
    """
    missing = [n for n in names if n not in class_frequencies]
    if missing:
        raise ParameterError(
            f"dataset.json has no pixel frequency for class {missing[0]!r}; "
            "give `class_weights` (one per class, background first)"
        )
    shares = [float(class_frequencies[n]) for n in names]
    return [max(1.0 - sum(shares), MIN_BACKGROUND_SHARE), *shares]


def batch_loss(value):
    """A loss over the whole batch as a one-element tensor, not a scalar: Keras divides a
    non-scalar loss by the number of replicas under tf.distribute (whose gradients are then
    summed), but passes a scalar through, which would count it once per replica."""
    return ops.reshape(value, (1,))


def _valid_and_target(y_true):
    y_true = ops.cast(y_true, "float32")
    valid = ops.cast(y_true <= 1.0, "float32")
    return valid, y_true * valid


@keras.saving.register_keras_serializable(package="geoseg")
class SegmentationLoss(keras.losses.Loss):
    """Mean over target channels of each channel's loss.

    Class targets: ``bce_dice``, weighted BCE + ``dice_weight`` x (1 - soft Dice); ``bce``,
    unweighted binary cross-entropy alone; ``dice``, soft Dice alone. Regression targets
    (``kinds``, one of :data:`KINDS` per channel; default all ``class``): 1 - Tanimoto with
    complement, whatever ``kind``. BCE is averaged over the valid pixels of the batch; Dice and
    Tanimoto are computed over the whole batch per channel.
    """

    def __init__(
        self,
        kind: str = "bce_dice",
        pos_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        kinds: Sequence[str] | None = None,
        name: str = "segmentation_loss",
        **kwargs,
    ):
        if kind not in LOSSES:
            raise ParameterError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        if dice_weight < 0:
            raise ParameterError(f"dice weight must be >= 0, not {dice_weight}")
        if kinds is not None and any(k not in KINDS for k in kinds):
            raise ParameterError(f"target kinds must be {' or '.join(KINDS)}, not {list(kinds)}")
        super().__init__(name=name, **kwargs)
        self.kind = kind
        self.pos_weights = None if pos_weights is None else [float(w) for w in pos_weights]
        self.dice_weight = float(dice_weight)
        self.kinds = None if kinds is None else [str(k) for k in kinds]

    def call(self, y_true, y_pred):
        valid, target = _valid_and_target(y_true)
        prob = ops.clip(ops.cast(y_pred, "float32"), _EPSILON, 1.0 - _EPSILON)
        per_channel = self._class_losses(valid, target, prob)
        if self.kinds and "regression" in self.kinds:
            regression = ops.convert_to_tensor([k == "regression" for k in self.kinds], "float32")
            loss = 1.0 - tanimoto_with_complement(valid, target, prob)
            per_channel = regression * loss + (1.0 - regression) * per_channel
        return batch_loss(ops.mean(per_channel))

    def _class_losses(self, valid, target, prob):
        """Per channel: BCE and/or the Dice term, as chosen by ``kind``."""
        return _cross_entropy_and_dice(
            self.kind,
            self.dice_weight,
            lambda: self._bce(valid, target, prob),
            lambda: 1.0 - soft_dice(valid, target, prob),
        )

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
        config.update(
            kind=self.kind,
            pos_weights=self.pos_weights,
            dice_weight=self.dice_weight,
            kinds=self.kinds,
        )
        return config


def _cross_entropy_and_dice(kind: str, dice_weight: float, cross_entropy, dice_loss):
    """The terms ``kind`` names, e.g. ``bce_dice``: cross-entropy + ``dice_weight`` x the Dice
    loss; ``bce`` or ``ce``: cross-entropy alone; ``dice``: the Dice loss alone (weight 1).

    ``cross_entropy`` and ``dice_loss`` are callables, evaluated only when needed.
    """
    if kind == "dice":
        return dice_loss()
    total = cross_entropy()
    if kind.endswith("_dice"):
        total = total + dice_weight * dice_loss()
    return total


@keras.saving.register_keras_serializable(package="geoseg")
class CategoricalSegmentationLoss(keras.losses.Loss):
    """Loss of a softmax model over mutually exclusive classes, background first.

    ``ce_dice``: class-weighted categorical cross-entropy + ``dice_weight`` x (1 - soft Dice
    averaged over the classes, background included); ``ce``: unweighted cross-entropy alone;
    ``dice``: the Dice term alone. Today's names ``bce_dice`` and ``bce`` mean ``ce_dice`` and
    ``ce``. The cross-entropy is a weighted mean over the valid pixels of the batch: each pixel
    weighs its true class's weight and the sum is divided by the sum of those weights (as
    PyTorch's ``CrossEntropyLoss(weight=...)``), so scaling every weight leaves the loss as it
    is. The Dice of each class is computed over the whole batch.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        kind: str = "ce_dice",
        name: str = "categorical_segmentation_loss",
        **kwargs,
    ):
        kind = CATEGORICAL_NAMES.get(kind, kind)
        if kind not in CATEGORICAL_LOSSES:
            choices = ", ".join(CATEGORICAL_LOSSES)
            raise ParameterError(f"unknown multiclass loss {kind!r}; choose one of {choices}")
        if dice_weight < 0:
            raise ParameterError(f"dice weight must be >= 0, not {dice_weight}")
        if class_weights is not None and any(not w > 0 for w in class_weights):
            raise ParameterError("class weights must be positive")
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.dice_weight = float(dice_weight)
        self.kind = kind

    def call(self, y_true, y_pred):
        valid, target = _valid_and_target(y_true)
        prob = ops.clip(ops.cast(y_pred, "float32"), _EPSILON, 1.0 - _EPSILON)
        return batch_loss(
            _cross_entropy_and_dice(
                self.kind,
                self.dice_weight,
                lambda: self._cross_entropy(target, prob),
                lambda: 1.0 - ops.mean(soft_dice(valid, target, prob)),
            )
        )

    def _cross_entropy(self, target, prob):
        """Mean cross-entropy over the valid pixels, weighted by true class in ``ce_dice``."""
        pixel_weight = ops.sum(target, axis=-1)  # 1 at a valid pixel, 0 at an ignored one
        if self.kind == "ce_dice" and self.class_weights is not None:
            if len(self.class_weights) != prob.shape[-1]:
                raise ParameterError(
                    f"{len(self.class_weights)} class weights for {prob.shape[-1]} classes "
                    "(one per class, background first)"
                )
            weights = ops.convert_to_tensor(self.class_weights, "float32")
            pixel_weight = ops.sum(target * weights, axis=-1)
        per_pixel = -ops.sum(target * ops.log(prob), axis=-1)
        return ops.divide_no_nan(ops.sum(pixel_weight * per_pixel), ops.sum(pixel_weight))

    def get_config(self):
        config = super().get_config()
        config.update(
            class_weights=self.class_weights, dice_weight=self.dice_weight, kind=self.kind
        )
        return config


def soft_dice(valid, target, prob):
    """Soft Dice per class over all valid pixels of the batch (1 = perfect)."""
    axes = tuple(range(len(prob.shape) - 1))
    intersection = ops.sum(valid * prob * target, axis=axes)
    sizes = ops.sum(valid * prob, axis=axes) + ops.sum(target, axis=axes)
    return (2.0 * intersection + _DICE_SMOOTH) / (sizes + _DICE_SMOOTH)


def tanimoto(valid, target, prob):
    """Tanimoto coefficient per channel over the valid pixels of the batch (1 = perfect)."""
    axes = tuple(range(len(prob.shape) - 1))
    product = ops.sum(valid * prob * target, axis=axes)
    squares = ops.sum(valid * ops.square(prob), axis=axes) + ops.sum(ops.square(target), axis=axes)
    return (product + _DICE_SMOOTH) / (squares - product + _DICE_SMOOTH)


def tanimoto_with_complement(valid, target, prob):
    """Mean of the Tanimoto coefficients of the values and of their complements (DECODE).

    ``target`` is 0 where not ``valid``; so is the complement's, and ignored pixels count in
    neither term.
    """
    complement = tanimoto(valid, valid * (1.0 - target), 1.0 - prob)
    return 0.5 * (tanimoto(valid, target, prob) + complement)


METRICS = ("iou", "f1", "precision", "recall")


@keras.saving.register_keras_serializable(package="geoseg")
class MaskedScore(keras.metrics.Metric):
    """IoU, F1, precision or recall of one class (or their mean over classes) at a threshold.

    ``mean_of`` restricts the mean to some channels (the class targets of a multi-task model).
    """

    def __init__(
        self,
        kind: str,
        classes: int,
        class_index: int | None = None,
        threshold: float = 0.5,
        name: str | None = None,
        mean_of: Sequence[int] | None = None,
        **kwargs,
    ):
        if kind not in METRICS:
            raise ParameterError(f"unknown metric {kind!r}; choose one of {', '.join(METRICS)}")
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.classes, self.class_index = kind, classes, class_index
        self.threshold = float(threshold)
        self.mean_of = None if mean_of is None else [int(c) for c in mean_of]
        self.counts = {
            c: self.add_variable(shape=(classes,), initializer="zeros", name=c, dtype="float32")
            for c in ("tp", "fp", "fn")
        }

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid, target = _valid_and_target(y_true)
        predicted = self._predicted(y_pred) * valid
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
        if self.class_index is not None:
            return per_class[self.class_index]
        return self._mean(per_class)

    def _predicted(self, y_pred):
        """1 where a pixel is predicted positive for a class, per channel."""
        return ops.cast(ops.cast(y_pred, "float32") >= self.threshold, "float32")

    def _mean(self, per_class):
        """The mean over ``mean_of`` (default every class)."""
        if self.mean_of is not None:
            per_class = ops.take(per_class, self.mean_of)
        return ops.mean(per_class)

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
            mean_of=self.mean_of,
        )
        return config


@keras.saving.register_keras_serializable(package="geoseg")
class MulticlassScore(MaskedScore):
    """:class:`MaskedScore` of a softmax model: each pixel is predicted as its likeliest class
    (argmax), and a mean is over the classes of ``mean_of`` present in the truth or the
    prediction, as :meth:`geoseg.metrics.scores.ConfusionMatrix.mean_iou`."""

    def _predicted(self, y_pred):
        return ops.one_hot(ops.argmax(y_pred, axis=-1), self.classes, dtype="float32")

    def _mean(self, per_class):
        tp, fp, fn = (self.counts[c] for c in ("tp", "fp", "fn"))
        present = ops.cast(tp + fp + fn > 0, "float32")
        if self.mean_of is not None:
            per_class, present = ops.take(per_class, self.mean_of), ops.take(present, self.mean_of)
        return ops.divide_no_nan(ops.sum(per_class * present), ops.sum(present))

    def get_config(self):
        config = super().get_config()
        del config["threshold"]  # argmax, no threshold
        return config


@keras.saving.register_keras_serializable(package="geoseg")
class MaskedMAE(keras.metrics.Metric):
    """Mean absolute error of one regression channel over its valid pixels."""

    def __init__(self, channel: int, name: str = "mae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.channel = int(channel)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid, target = _valid_and_target(y_true[..., self.channel])
        error = ops.abs(ops.cast(y_pred[..., self.channel], "float32") - target) * valid
        self.total.assign_add(ops.sum(error))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config.update(channel=self.channel)
        return config


def metric_key(kind: str, class_name: str) -> str:
    """The name a per-class metric is logged under, e.g. ``iou_boundary`` (safe characters)."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]', '_', class_name)}"


def training_metrics(
    class_names: Sequence[str], kinds: Sequence[str] | None = None
) -> list[keras.metrics.Metric]:
    """Logged every epoch: mean IoU of the class targets and IoU and F1 of each, at threshold
    0.5; ``mae_NAME`` of each regression target (``kinds``: one per channel, default classes)."""
    n = len(class_names)
    kinds = list(kinds or ["class"] * n)
    classes = [i for i, k in enumerate(kinds) if k == "class"]
    metrics = []
    if classes:
        mean_of = None if len(classes) == n else classes
        metrics.append(MaskedScore("iou", n, name="iou", mean_of=mean_of))
    for i, name in enumerate(class_names):
        if kinds[i] == "regression":
            metrics.append(MaskedMAE(i, name=metric_key("mae", name)))
            continue
        metrics += _iou_and_f1(MaskedScore, n, i, name)
    return metrics


def multiclass_metrics(class_names: Sequence[str]) -> list[keras.metrics.Metric]:
    """Logged every epoch for a softmax model (``class_names`` background first): ``iou``, the
    mean IoU of the foreground classes present, and ``iou_NAME`` and ``f1_NAME`` of every
    class, background included, with argmax predictions."""
    n = len(class_names)
    metrics = [MulticlassScore("iou", n, name="iou", mean_of=range(1, n))]
    for i, name in enumerate(class_names):
        metrics += _iou_and_f1(MulticlassScore, n, i, name)
    return metrics


def _iou_and_f1(score: type[MaskedScore], classes: int, index: int, name: str) -> list:
    """IoU and F1 metrics of one class, named as :func:`metric_key` says."""
    return [score(kind, classes, index, name=metric_key(kind, name)) for kind in ("iou", "f1")]


def channel_weights(kinds: Sequence[str], class_weights: Sequence[float]) -> list[float]:
    """One positive weight per channel: the class targets' in order, 1 for regression ones."""
    weights = iter(class_weights)
    return [next(weights) if k == "class" else 1.0 for k in kinds]


def resolve_class_weights(
    spec: str | Sequence[float], class_names: Sequence[str], frequencies: Mapping[str, float]
) -> tuple[list[float], str]:
    """``auto`` or explicit weights -> (one weight per class, how they were chosen).

    ``class_names`` are the class targets only: regression targets have no class weight.
    """
    if _is_auto(spec):
        return auto_class_weights([frequencies[c] for c in class_names]), "auto"
    return _explicit_weights(spec, class_names, "regression targets take none"), "explicit"


def resolve_multiclass_weights(
    spec: str | Sequence[float], class_names: Sequence[str], frequencies: Mapping[str, float]
) -> tuple[list[float], str]:
    """``auto`` or explicit weights of a softmax model -> (one weight per class, background
    first as in ``class_names``, and how they were chosen).

    ``auto``: :func:`auto_multiclass_weights` of :func:`multiclass_frequencies` estimated from
    ``frequencies`` (dataset.json's class frequencies).
    """
    if _is_auto(spec):
        shares = multiclass_frequencies(frequencies, class_names[1:])
        return auto_multiclass_weights(shares), "auto"
    return _explicit_weights(spec, class_names, "background first"), "explicit"


def _is_auto(spec: str | Sequence[float]) -> bool:
    return isinstance(spec, str) and spec.strip().lower() == "auto"


def _explicit_weights(
    spec: str | Sequence[float], class_names: Sequence[str], note: str
) -> list[float]:
    """Weights given as numbers or text like ``10,1``, checked: one per class, positive."""
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
            f"({', '.join(class_names) or 'none'}; {note})"
        )
    if any(not w > 0 for w in weights):
        raise ParameterError("class weights must be positive")
    return weights
