"""Scores of a trained model on its validation (and test) chips, and the parcel
delineation tuned on the validation areas with the fit report on training areas.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from geoseg.contracts import DEFAULT_THRESHOLD, Delineation
from geoseg.metrics.scores import ConfusionMatrix, RegressionErrors, ScoreHistogram
from geoseg.training.parcel_areas import area_pieces, area_predictor
from geoseg.training.plan import Plan
from geoseg.training.tuning import object_counts, predicted_samples, tune_delineation

logger = logging.getLogger(__name__)


TUNING_PIXELS = 2**20
"""Most validation pixels the delineation thresholds are tuned on (areas spread over them)."""

FIT_PIXELS = 2**19
"""Most training pixels the fit report (parcels of the training areas) is measured on."""

MARKER_THRESHOLD = DEFAULT_THRESHOLD
"""The card's threshold of a regression target (``distance``): the marker level of parcel
delineation until it is tuned."""


def score_histogram(model, dataset, class_names: Sequence[str]) -> ScoreHistogram:
    """Predict every (image, mask) batch of ``dataset`` and count scores per class and level."""
    return validation_scores(model, dataset, class_names, ["class"] * len(class_names))[0]


def validation_scores(
    model, dataset, names: Sequence[str], kinds: Sequence[str]
) -> tuple[ScoreHistogram, RegressionErrors]:
    """Predict every (image, mask) batch of ``dataset``: score histograms of the class targets
    and errors of the regression targets (``kinds``: one per output channel)."""
    return pooled_validation_scores([(model, dataset)], names, kinds)


def pooled_validation_scores(
    pairs: Sequence[tuple], names: Sequence[str], kinds: Sequence[str]
) -> tuple[ScoreHistogram, RegressionErrors]:
    """:func:`validation_scores` summed over (model, dataset) pairs: each fold's val chips
    predicted by its own model."""
    classes = [i for i, k in enumerate(kinds) if k == "class"]
    regression = [i for i, k in enumerate(kinds) if k == "regression"]
    histogram = ScoreHistogram([names[i] for i in classes])
    errors = RegressionErrors([names[i] for i in regression])
    for model, dataset in pairs:
        for images, masks in dataset:
            predicted, masks = np.asarray(model(images, training=False)), np.asarray(masks)
            if classes:
                histogram.add(predicted[..., classes], masks[..., classes])
            if regression:
                errors.add(predicted[..., regression], masks[..., regression])
    return histogram, errors


def multilabel_scores(plan: Plan, val: Sequence[tuple], test: tuple | None) -> tuple[dict, dict]:
    """Thresholds tuned for F1 on val; scores per target on val (and test at them). ``val``
    holds (model, dataset) pairs, pooled; ``test`` one pair or None."""
    val = pooled_validation_scores(val, plan.class_names, plan.kinds)  # the model as saved
    tuned = val[0].best_thresholds()
    thresholds = {n: tuned.get(n, MARKER_THRESHOLD) for n in plan.class_names}
    scores = {"val": target_scores(plan, val, thresholds)}
    logger.info("thresholds chosen on val: %s", describe_scores(thresholds, scores["val"]))
    if test is not None:
        test = validation_scores(*test, plan.class_names, plan.kinds)
        scores["test"] = target_scores(plan, test, thresholds)
        logger.info("test scores at them: %s", describe_scores(thresholds, scores["test"]))
    return thresholds, scores


def confusion_matrix(model, dataset, names: Sequence[str]) -> ConfusionMatrix:
    """Pixels of every (image, one-hot target) batch of ``dataset`` by true and likeliest class."""
    return pooled_confusion_matrix([(model, dataset)], names)


def pooled_confusion_matrix(pairs: Sequence[tuple], names: Sequence[str]) -> ConfusionMatrix:
    """:func:`confusion_matrix` summed over (model, dataset) pairs."""
    matrix = ConfusionMatrix(names)
    for model, dataset in pairs:
        for images, targets in dataset:
            predicted = np.argmax(np.asarray(model(images, training=False)), axis=-1)
            targets = np.asarray(targets)
            truth = np.where(targets[..., 0] <= 1.0, np.argmax(targets, axis=-1), 255)
            matrix.add(truth, predicted)
    return matrix


def multiclass_scores(plan: Plan, val: Sequence[tuple], test: tuple | None) -> dict:
    """Per class IoU, F1, precision, recall of the likeliest class on val (and test), and mean
    IoU of the foreground classes as ``{split}_mean_iou``; ``val`` and ``test`` as for
    :func:`multilabel_scores`."""
    scores = {}
    for split, pairs in (("val", val), ("test", [test] if test else None)):
        if pairs is None:
            continue
        found = pooled_confusion_matrix(pairs, plan.class_names).to_json()
        scores[split] = found["per_class"]
        scores[f"{split}_mean_iou"] = found["mean_iou"]
        scores[f"{split}_confusion"] = found["matrix"]
        logger.info(
            "%s: mean IoU %.3f; %s",
            split,
            found["mean_iou"],
            describe_scores({}, found["per_class"]),
        )
    return scores


def tune_parcels(pairs: Sequence[tuple], plan: Plan, thresholds: dict) -> dict | None:
    """Parcel thresholds tuned for object F1 on the val chips stitched into areas, when parcels
    can be delineated: once for plain prediction and once (``tta``) for ``predict --tta``.
    ``pairs`` holds (model, chips) pairs: the val areas of each chips view are predicted by its
    model and pooled."""
    chips, roles = pairs[0][1], plan.roles
    if roles is None:
        return None
    classes = len(plan.class_names)

    def areas_of(split: str, pixels: int) -> tuple[list, list]:
        """The pieces of ``split`` of every view and the model that predicts each."""
        pieces, models = [], []
        for model, view in pairs:
            found = area_pieces(view, split, pixels / len(pairs))
            pieces += found
            models += [model] * len(found)
        return pieces, models

    def predictors(models, tta: bool = False) -> list:
        return [area_predictor(m, chips.chip_size, classes, tta) for m in models]

    start = Delineation(
        extent=thresholds.get(roles.names.get("extent"), 0.5),
        boundary=thresholds.get(roles.names.get("boundary"), 0.5),
        marker=thresholds.get(roles.names.get("distance"), MARKER_THRESHOLD),
    )
    pieces, models = areas_of("val", TUNING_PIXELS)
    record = tune_delineation(predictors(models), pieces, roles.outputs, roles.truth_bands, start)
    if record is not None:
        with_tta = predictors(models, tta=True)
        with_tta = tune_delineation(with_tta, pieces, roles.outputs, roles.truth_bands, start)
        record["tta"] = {k: with_tta[k] for k in ("thresholds", "val_objects")}
        record["val_areas"] = {"areas": len(pieces), "pixels": sum(p[1].size for p in pieces)}
        fit_pieces, fit_models = areas_of("train", FIT_PIXELS)
        if fit_pieces:
            samples = predicted_samples(
                predictors(fit_models), fit_pieces, roles.outputs, roles.truth_bands
            )
            tuned = Delineation.from_mapping(record["thresholds"], start)
            record["fit_objects"] = object_counts(samples, tuned)
            pixels = sum(p[1].size for p in fit_pieces)
            record["fit_areas"] = {"areas": len(fit_pieces), "pixels": pixels}
            logger.info(
                "fit: parcels on %d train areas F1 %.3f, on the val areas %.3f",
                len(fit_pieces), record["fit_objects"]["f1"], record["val_objects"]["f1"],
            )  # fmt: skip
    return record


def target_scores(plan: Plan, measured: tuple, thresholds: dict) -> dict:
    """Per target in output order: IoU, F1, precision, recall (classes) or MAE, RMSE."""
    histogram, errors = measured
    found = {**histogram.scores(thresholds), **errors.scores()}
    return {name: found[name] for name in plan.class_names}


def describe_scores(thresholds: dict, scores: dict) -> str:
    """Per target: threshold, F1 and IoU (classes) or MAE (regression), for the log."""

    def describe(name, score):
        if "mae" in score:
            return f"{name} (MAE {score['mae']:.3f})"
        at = f" {thresholds[name]:.3f}" if name in thresholds else ""
        return f"{name}{at} (F1 {score['f1']:.3f}, IoU {score['iou']:.3f})"

    return ", ".join(describe(n, s) for n, s in scores.items())
