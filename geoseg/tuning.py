"""Delineation thresholds tuned on validation chips for object F1, not pixel F1.

Each validation chip is predicted whole; its true parcels come from the chip's own masks (the
field extent split by the boundary, :func:`geoseg.regions.instance_labels_from_masks`), and the
predicted parcels from the same delineation that ``geoseg vectorize`` runs
(:func:`geoseg.regions.delineate_parcels`, or the closing of the boundary for a boundary-only
model). Objects are matched one to one at IoU >= 0.5 in pixel space, summed over the chips, and
the thresholds are chosen by coordinate ascent over :data:`CANDIDATES`, one threshold at a time.
Parcels cut by a chip's edge count by their visible part on both sides, alike for every recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.objects import match_label_images
from geoseg.regions import delineate_parcels, instance_labels_from_masks, parcel_labels
from geoseg.scoring import scores

logger = logging.getLogger(__name__)

DEFAULTS = {"extent": 0.5, "boundary": 0.5, "marker": 0.5}
CANDIDATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROUNDS = 2


@dataclass
class ChipSample:
    """One validation chip: predicted bands by role (float 0..1), true parcels, validity."""

    predicted: dict[str, np.ndarray]
    truth: np.ndarray
    valid: np.ndarray


def true_parcels(mask: np.ndarray, bands: dict[str, int]) -> np.ndarray | None:
    """True parcel labels of a chip from its mask (h, w, bands) and the role -> band indexes;
    None without an extent band."""
    if "extent" not in bands:
        return None
    boundary = mask[..., bands["boundary"]] if "boundary" in bands else None
    labelled = mask[..., bands["extent"]] != 255
    return instance_labels_from_masks(mask[..., bands["extent"]], boundary, labelled)


def delineate(sample: ChipSample, thresholds: dict[str, float]) -> np.ndarray:
    """The parcels ``vectorize`` would find in this chip at ``thresholds``."""
    bands, thresholds = sample.predicted, {**DEFAULTS, **thresholds}
    if "extent" in bands:
        return delineate_parcels(
            bands["extent"], bands.get("boundary"), bands.get("distance"), sample.valid, thresholds
        )
    return parcel_labels(bands["boundary"] >= thresholds["boundary"], sample.valid)


def object_counts(samples: Sequence[ChipSample], thresholds: dict[str, float]) -> dict:
    """Matched, predicted and true parcels over the chips, with precision, recall and F1."""
    matched = predicted = true = 0
    for sample in samples:
        m, p, t = match_label_images(delineate(sample, thresholds), sample.truth, 0.5, sample.valid)
        matched, predicted, true = matched + m, predicted + p, true + t
    s = scores(matched, predicted - matched, true - matched)
    return {"matched": matched, "predicted": predicted, "true": true, **s}


def tunable(roles: Sequence[str]) -> list[str]:
    """The thresholds that change the parcels of a model with these output roles."""
    keys = [k for k in ("extent", "boundary") if k in roles]
    if "extent" in roles and "distance" in roles:
        keys.append("marker")
    return keys


def tune_thresholds(
    samples: Sequence[ChipSample], start: dict[str, float], keys: Sequence[str]
) -> tuple[dict[str, float], dict]:
    """Coordinate ascent on object F1 from ``start``; returns the thresholds and their counts."""
    best, best_counts = dict(start), object_counts(samples, start)
    for _ in range(ROUNDS):
        improved = False
        for key in keys:
            for value in CANDIDATES:
                trial = {**best, key: value}
                counts = object_counts(samples, trial)
                if counts["f1"] > best_counts["f1"] + 1e-12:
                    best, best_counts, improved = trial, counts, True
        if not improved:
            break
    return best, best_counts


def tune_delineation(
    predict: Callable[[np.ndarray], np.ndarray],
    chips: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    outputs: dict[str, int],
    truth_bands: dict[str, int],
    start: dict[str, float],
) -> dict | None:
    """Thresholds for the parcels of a model, tuned on validation chips for object F1.

    ``predict`` maps a chip image (h, w, bands) to outputs (h, w, n) in 0..1; ``chips`` holds
    (image, valid (h, w), full mask (h, w, bands)); ``outputs`` and ``truth_bands`` map roles
    to output and mask band indexes; ``start`` holds the initial thresholds. Returns the card's
    ``delineation`` record, or None when the chips have no extent or the model neither an
    extent nor a boundary.
    """
    keys = tunable(list(outputs))
    if not keys or "extent" not in truth_bands:
        return None
    samples = []
    for image, valid, mask in chips:
        output = predict(image)
        predicted = {role: output[..., i] for role, i in outputs.items()}
        samples.append(ChipSample(predicted, true_parcels(mask, truth_bands), valid.astype(bool)))
    default_counts = object_counts(samples, start)
    thresholds, counts = tune_thresholds(samples, start, keys)
    logger.info(
        "delineation thresholds %s: object F1 %.3f on %d val chips (%.3f at %s)",
        thresholds, counts["f1"], len(samples), default_counts["f1"], start,
    )  # fmt: skip
    return {
        "thresholds": {k: thresholds[k] for k in keys},
        "tuned_for": "object_f1",
        "iou": 0.5,
        "val_objects": counts,
        "val_objects_untuned": {"thresholds": {k: start[k] for k in keys}, **default_counts},
    }
