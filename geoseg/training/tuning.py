"""Delineation thresholds tuned on validation areas for object F1, not pixel F1.

The validation chips are stitched back into the areas they cover
(:mod:`geoseg.training.chip_areas`), so that most parcels are whole, and predicted as ``geoseg
predict`` does (overlapping chips, blended). True parcels come from the stitched masks (the field
extent split by the boundary, :func:`geoseg.delineation.regions.instance_labels_from_masks`),
predicted parcels from the delineation that ``geoseg vectorize`` runs
(:func:`geoseg.delineation.regions.delineate_parcels`, or the closing of the boundary for a
boundary-only model). Objects are matched one to one at IoU >= 0.5 in pixel space, summed over the
areas; combinations of :data:`CANDIDATES` are searched coarse to fine. Parcels cut by an area's edge
count by their visible part on both sides, alike for every recipe.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.contracts import IGNORE, Delineation, delineation_method
from geoseg.delineation.regions import (
    confident_parcels,
    delineate_parcels,
    instance_labels_from_masks,
    parcel_labels,
)
from geoseg.metrics.objects import match_label_images
from geoseg.metrics.scores import scores

logger = logging.getLogger(__name__)

CANDIDATES = {
    "extent": (0.3, 0.4, 0.5, 0.6, 0.7),
    "boundary": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "marker": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "parcel": (0.0, 0.5, 0.6, 0.7, 0.8),
}
"""Thresholds tried together for a model with an extent (searched coarse to fine)."""
MERGE = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
"""Merge levels tried once the others are chosen (0: parcels on quiet contacts stay apart)."""
SPLITS = (0.0, 0.1, 0.2)
"""Split depths tried with each join level once the others are chosen (0: markers whole)."""
JOINS = (0.0, 0.4, 0.5, 0.6, 0.7)
"""Join levels tried (0: neighbouring parcels stay apart whatever their border)."""
MIN_SPLIT_JOIN_PARCELS = 50
"""Fewest true parcels in the val areas for the split and join to be tuned: with fewer, one
parcel moves the F1 by more than 0.02, and a join chosen on the demo's 20 val parcels cost it 3
of its 36 parcels on the whole scene."""
BOUNDARY_ONLY = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Thresholds tried for a boundary-only model."""


@dataclass
class ChipSample:
    """One validation area or chip: predicted bands by role (float 0..1), true parcels, validity."""

    predicted: dict[str, np.ndarray]
    truth: np.ndarray
    valid: np.ndarray
    labelled: np.ndarray | None = None
    """Where the truth is known (sparse labels leave the rest unlabelled); None: everywhere."""


def true_parcels(mask: np.ndarray, bands: dict[str, int]) -> np.ndarray | None:
    """True parcel labels of a chip from its mask (h, w, bands) and the role -> band indexes;
    None without an extent band."""
    if "extent" not in bands:
        return None
    boundary = mask[..., bands["boundary"]] if "boundary" in bands else None
    return instance_labels_from_masks(
        mask[..., bands["extent"]], boundary, known_pixels(mask, bands)
    )


def known_pixels(mask: np.ndarray, bands: dict[str, int]) -> np.ndarray | None:
    """Where a chip's truth is known (its extent is not ignored); None without an extent band."""
    return mask[..., bands["extent"]] != IGNORE if "extent" in bands else None


def delineate(sample: ChipSample, thresholds: Delineation) -> np.ndarray:
    """The parcels ``vectorize`` would find in this sample at ``thresholds``."""
    bands = sample.predicted
    if "extent" in bands:
        labels = delineate_parcels(
            bands["extent"], bands.get("boundary"), bands.get("distance"), sample.valid, thresholds
        )
        return kept_parcels(labels, sample, thresholds.parcel)
    return parcel_labels(bands["boundary"] >= thresholds.boundary, sample.valid)


def counts_of(labelled: Sequence[tuple[np.ndarray, ChipSample]]) -> dict:
    """Matched, predicted and true parcels over (predicted labels, sample) pairs, with
    precision, recall and F1."""
    matched = predicted = true = 0
    for labels, sample in labelled:
        m, p, t = match_label_images(labels, sample.truth, 0.5, sample.valid, sample.labelled)
        matched, predicted, true = matched + m, predicted + p, true + t
    s = scores(matched, predicted - matched, true - matched)
    return {"matched": matched, "predicted": predicted, "true": true, **s}


def object_counts(samples: Sequence[ChipSample], thresholds: Delineation) -> dict:
    """Matched, predicted and true parcels over the samples at ``thresholds``."""
    return counts_of([(delineate(sample, thresholds), sample) for sample in samples])


def tunable(roles: Sequence[str]) -> list[str]:
    """The thresholds that change the parcels of a model with these output roles."""
    keys = [k for k in ("extent", "boundary") if k in roles]
    if "extent" in roles and "distance" in roles:
        keys.append("marker")
    if "extent" in roles:
        keys.append("parcel")
    if "extent" in roles and "boundary" in roles:
        keys += ["merge", "split", "join"]
    return keys


def tune_thresholds(
    samples: Sequence[ChipSample], start: Delineation, keys: Sequence[str]
) -> tuple[Delineation, dict]:
    """The combination of candidate thresholds with the best object F1, searched coarse to fine:
    every combination of every other candidate, then every combination of the best one's
    neighbours; ties go to the one nearest ``start``. Returns the thresholds and their counts.

    Each delineation is made once; the parcel threshold only drops some of its parcels.
    """
    outer = [k for k in keys if k not in ("parcel", "merge", "split", "join")]
    full = [BOUNDARY_ONLY] if outer == ["boundary"] else [CANDIDATES[k] for k in outer]
    parcel_levels = CANDIDATES["parcel"] if "parcel" in keys else (start.parcel,)
    tried: dict[tuple, tuple] = {}

    def search(combinations) -> None:
        for indexes in combinations:
            if indexes in tried:
                continue
            trial = start.replace(**{k: full[i][j] for i, (k, j) in enumerate(zip(outer, indexes))})
            tried[indexes] = _best_parcel_level(samples, trial, parcel_levels, start, keys)

    search(itertools.product(*[range(0, len(c), 2) for c in full]))
    best = min(tried, key=lambda i: tried[i][0])
    near = [range(max(0, j - 1), min(len(c), j + 2)) for j, c in zip(best, full)]
    search(itertools.product(*near))
    rank, thresholds, counts = min(tried.values(), key=lambda entry: entry[0])
    if "merge" in keys:
        for level in (m for m in MERGE if m != thresholds.merge):  # that one is ranked
            trial = thresholds.replace(merge=level)
            found = counts_of([(delineate(sample, trial), sample) for sample in samples])
            order = (-found["f1"], start.distance(trial, keys))
            if order < rank:
                rank, thresholds, counts = order, trial, found
    if "join" in keys and counts["true"] >= MIN_SPLIT_JOIN_PARCELS:
        rank, thresholds, counts = _tune_split_join(samples, start, keys, thresholds, rank, counts)
    elif "join" in keys:
        logger.info(
            "split and join left off: the val areas hold %d true parcels (fewer than %d)",
            counts["true"], MIN_SPLIT_JOIN_PARCELS,
        )  # fmt: skip
    return thresholds, counts


def _tune_split_join(samples, start: Delineation, keys, chosen: Delineation, rank, counts):
    """The best of ``chosen`` and its variants with every split depth and join level, the
    parcel threshold tuned again for each (joined parcels have other mean extents)."""
    best = (rank, chosen, counts)
    for split, join in itertools.product(SPLITS, JOINS):
        if (split, join) == (chosen.split, chosen.join):
            continue
        trial = chosen.replace(split=split, join=join)
        candidate = _best_parcel_level(samples, trial, CANDIDATES["parcel"], start, keys)
        if candidate[0] < best[0]:
            best = candidate
    return best


def _best_parcel_level(samples, trial: Delineation, levels, start: Delineation, keys) -> tuple:
    """(rank, thresholds, counts) of ``trial`` at its best parcel threshold of ``levels``: one
    delineation, each level only dropping some of its parcels; ties go to the nearest
    ``start``, then to the first level."""
    found = [(delineate(sample, trial.replace(parcel=0.0)), sample) for sample in samples]
    best = None
    for level in levels:
        kept = [(kept_parcels(labels, sample, level), sample) for labels, sample in found]
        counts, chosen = counts_of(kept), trial.replace(parcel=level)
        rank = (-counts["f1"], start.distance(chosen, keys))
        if best is None or rank < best[0]:
            best = (rank, chosen, counts)
    return best


def kept_parcels(labels: np.ndarray, sample: ChipSample, threshold: float) -> np.ndarray:
    """``labels`` without the parcels under ``threshold`` of mean extent (if there is one)."""
    if "extent" not in sample.predicted:
        return labels
    return confident_parcels(labels, sample.predicted["extent"], threshold)


Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def predicted_samples(
    predict: Predictor | Sequence[Predictor],
    pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    outputs: dict[str, int],
    truth_bands: dict[str, int],
) -> list[ChipSample]:
    """Each piece predicted (by one predictor, or each by its own) with its true parcels;
    arguments as for :func:`tune_delineation`."""
    predictors = [predict] * len(pieces) if callable(predict) else list(predict)
    samples = []
    for (image, valid, mask), run in zip(pieces, predictors, strict=True):
        output = run(image, valid)
        predicted = {role: output[..., i] for role, i in outputs.items()}
        truth, known = true_parcels(mask, truth_bands), known_pixels(mask, truth_bands)
        samples.append(ChipSample(predicted, truth, valid.astype(bool), known))
    return samples


def tune_delineation(
    predict: Predictor | Sequence[Predictor],
    pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    outputs: dict[str, int],
    truth_bands: dict[str, int],
    start: Delineation,
) -> dict | None:
    """Thresholds for the parcels of a model, tuned on validation areas (or chips) for object F1.

    ``predict`` maps an image (h, w, bands) and its validity (h, w) to outputs (h, w, n) in
    0..1 (or is a sequence of such, one per piece: each fold's areas predicted by its own
    model); ``pieces`` holds (image, valid (h, w), full mask (h, w, bands)); ``outputs`` and
    ``truth_bands`` map roles to output and mask band indexes; ``start`` holds the initial
    thresholds. Returns the card's ``delineation`` record, or None when the masks have no
    extent or the model neither an extent nor a boundary.
    """
    keys = tunable(list(outputs))
    if not keys or "extent" not in truth_bands:
        return None
    samples = predicted_samples(predict, pieces, outputs, truth_bands)
    default_counts = object_counts(samples, start)
    thresholds, counts = tune_thresholds(samples, start, keys)
    logger.info(
        "delineation thresholds %s: object F1 %.3f on %d val areas (%.3f at %s)",
        thresholds.to_dict(keys), counts["f1"], len(samples), default_counts["f1"],
        start.to_dict(keys),
    )  # fmt: skip
    return {
        "method": delineation_method(outputs),
        "thresholds": thresholds.to_dict(keys),
        "tuned_for": "object_f1",
        "iou": 0.5,
        "val_objects": counts,
        "val_objects_untuned": {"thresholds": start.to_dict(keys), **default_counts},
    }
