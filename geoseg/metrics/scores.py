"""Per-class pixel scores and the threshold that maximises F1, from probability histograms.

Probabilities are quantised to 0..255 as in the prediction GeoTIFFs, so a threshold chosen here
selects exactly the same pixels there: a pixel is positive when its value >= round(255 t).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geoseg.errors import ParameterError

LEVELS = 256


def scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """IoU, F1 (Dice), precision and recall from confusion counts (0 where undefined)."""

    def ratio(a, b):
        return float(a / b) if b else 0.0

    return {
        "iou": ratio(tp, tp + fp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def quantize(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in 0..1 -> uint8 0..255 (rounded), as written to prediction rasters."""
    return np.clip(np.rint(np.asarray(probabilities, np.float32) * 255.0), 0, 255).astype(np.uint8)


class ScoreHistogram:
    """Counts of positive and negative pixels per class and quantised probability level."""

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        self.positive = np.zeros((len(self.classes), LEVELS), np.int64)
        self.negative = np.zeros((len(self.classes), LEVELS), np.int64)

    def add(self, probabilities: np.ndarray, mask: np.ndarray) -> None:
        """Add a batch: probabilities (..., classes) in 0..1, mask (..., classes) 0/1/255."""
        levels = quantize(probabilities).reshape(-1, len(self.classes))
        mask = np.asarray(mask).reshape(-1, len(self.classes))
        for c in range(len(self.classes)):
            self.positive[c] += np.bincount(levels[mask[:, c] == 1, c], minlength=LEVELS)
            self.negative[c] += np.bincount(levels[mask[:, c] == 0, c], minlength=LEVELS)

    def _counts(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, fn) for every level k, predicting positive where level >= k."""
        tp = np.cumsum(self.positive[c][::-1])[::-1]
        fp = np.cumsum(self.negative[c][::-1])[::-1]
        fn = self.positive[c].sum() - tp
        return tp, fp, fn

    def _counts_at(self, c: int, threshold: float) -> tuple[int, int, int]:
        """(tp, fp, fn) of class ``c`` at ``threshold``, quantised like the prediction rasters."""
        level = int(round(threshold * 255.0))
        return tuple(int(x[level]) for x in self._counts(c))

    def best_thresholds(self) -> dict[str, float]:
        """Per class, the threshold in (0, 1] with the highest F1 (the lowest on ties).

        A class that no threshold finds (F1 = 0 everywhere, e.g. no positives) gets 0.5.
        """
        thresholds = {}
        for c, name in enumerate(self.classes):
            tp, fp, fn = self._counts(c)
            f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(LEVELS), where=tp > 0)
            level = int(np.argmax(f1[1:])) + 1  # level 0 would call every pixel positive
            thresholds[name] = round(level / 255.0, 4) if f1[level] > 0 else 0.5
        return thresholds

    def scores(self, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
        """IoU, F1, precision and recall per class at the given thresholds."""
        return {
            name: scores(*self._counts_at(c, thresholds[name]))
            for c, name in enumerate(self.classes)
        }

    def shares(self, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
        """Per class, the share of labelled pixels predicted positive and truly positive."""
        result = {}
        for c, name in enumerate(self.classes):
            tp, fp, _ = self._counts_at(c, thresholds[name])
            total = int(self.positive[c].sum() + self.negative[c].sum())
            result[name] = {
                "predicted": (tp + fp) / total if total else 0.0,
                "true": int(self.positive[c].sum()) / total if total else 0.0,
            }
        return result


class RegressionErrors:
    """Absolute and squared errors per regression target over its valid pixels.

    Values are quantised to 0..255 first, as in the prediction rasters.
    """

    def __init__(self, targets: Sequence[str]):
        self.targets = list(targets)
        self.absolute = np.zeros(len(self.targets))
        self.squared = np.zeros(len(self.targets))
        self.count = np.zeros(len(self.targets), np.int64)

    def add(self, values: np.ndarray, truth: np.ndarray) -> None:
        """Add a batch: values (..., targets) in 0..1, truth (..., targets) 0..1 or 255."""
        values = quantize(values).reshape(-1, len(self.targets)) / 255.0
        truth = np.asarray(truth, np.float64).reshape(-1, len(self.targets))
        for c in range(len(self.targets)):
            valid = truth[:, c] <= 1.0
            error = values[valid, c] - truth[valid, c]
            self.absolute[c] += np.abs(error).sum()
            self.squared[c] += np.square(error).sum()
            self.count[c] += int(valid.sum())

    def scores(self) -> dict[str, dict[str, float]]:
        """MAE and RMSE per target (0 without valid pixels)."""
        result = {}
        for c, name in enumerate(self.targets):
            n = max(int(self.count[c]), 1)
            result[name] = {
                "mae": float(self.absolute[c] / n),
                "rmse": float(np.sqrt(self.squared[c] / n)),
            }
        return result


class ConfusionMatrix:
    """Counts of (true class, predicted class) pixels for mutually exclusive classes.

    Class codes are 0..N-1 in the order of ``classes`` (0 is ``background`` for a multiclass
    model); any other code (e.g. 255) marks a pixel to ignore, in the truth or the prediction.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        n = len(self.classes)
        self.counts = np.zeros((n, n), np.int64)

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        """Add class codes of the same shape (any integer dtype)."""
        n = len(self.classes)
        truth = np.asarray(truth).ravel().astype(np.int64)
        predicted = np.asarray(predicted).ravel().astype(np.int64)
        keep = (truth >= 0) & (truth < n) & (predicted >= 0) & (predicted < n)
        pairs = truth[keep] * n + predicted[keep]
        self.counts += np.bincount(pairs, minlength=n * n).reshape(n, n)

    def scores(self) -> dict[str, dict[str, float]]:
        """IoU, F1, precision and recall of each class (one against the rest)."""
        tp = np.diag(self.counts)
        fp = self.counts.sum(axis=0) - tp
        fn = self.counts.sum(axis=1) - tp
        return {name: scores(tp[c], fp[c], fn[c]) for c, name in enumerate(self.classes)}

    def mean_iou(self, skip_first: bool = True) -> float:
        """Mean IoU over the classes present in the truth or the prediction; without the first
        class (background) when ``skip_first``."""
        per_class = self.scores()
        present = self.counts.sum(axis=0) + self.counts.sum(axis=1) > 0
        names = [n for c, n in enumerate(self.classes) if present[c] and (c or not skip_first)]
        return float(np.mean([per_class[n]["iou"] for n in names])) if names else 0.0

    def to_json(self) -> dict:
        """Classes (row = truth, column = prediction), counts, per-class scores, mean IoU."""
        return {
            "classes": self.classes,
            "matrix": self.counts.tolist(),
            "per_class": self.scores(),
            "mean_iou": self.mean_iou(),
            "pixel_accuracy": float(np.trace(self.counts) / max(int(self.counts.sum()), 1)),
        }


def resolve_thresholds(classes: list[str], card_thresholds: dict, threshold: float | None):
    """One threshold per class: ``threshold`` for all when given, else the model card's."""
    if threshold is None:
        return {name: float(card_thresholds[name]) for name in classes}
    if not 0.0 < threshold <= 1.0:
        raise ParameterError(f"`threshold` must be in (0, 1], got {threshold}")
    return {name: float(threshold) for name in classes}
