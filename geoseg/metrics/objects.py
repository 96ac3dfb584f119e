"""Objects matched between label images: one-to-one at an IoU, for object precision and recall.

Pure numpy, for tuning delineation thresholds on validation chips (with
:func:`geoseg.delineation.regions.delineate_parcels` and
:func:`geoseg.delineation.regions.instance_labels_from_masks`).
"""

from __future__ import annotations

import numpy as np


def match_label_images(
    predicted: np.ndarray,
    true: np.ndarray,
    iou: float = 0.5,
    valid: np.ndarray | None = None,
    labelled: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """``(matched, n_predicted, n_true)``: objects (labels > 0) paired one-to-one, best IoU
    first, where their IoU >= ``iou``; pixels outside ``valid`` are ignored. With ``labelled``
    (sparse labels: where the truth is known), predicted objects with most of their pixels
    outside it are left out, neither matched nor counted."""
    predicted, true = np.asarray(predicted).ravel(), np.asarray(true).ravel()
    if labelled is not None:
        predicted = _without_unlabelled_objects(predicted, np.asarray(labelled, bool).ravel())
    if valid is not None:
        keep = np.asarray(valid, bool).ravel()
        predicted, true = predicted[keep], true[keep]
    p_ids, p_index = np.unique(predicted, return_inverse=True)
    t_ids, t_index = np.unique(true, return_inverse=True)
    p_area, t_area = np.bincount(p_index), np.bincount(t_index)
    both = (predicted > 0) & (true > 0)
    codes = p_index[both].astype(np.int64) * len(t_ids) + t_index[both]
    pairs, overlap = np.unique(codes, return_counts=True)
    p, t = np.divmod(pairs, len(t_ids))
    scores = overlap / (p_area[p] + t_area[t] - overlap)
    n_predicted, n_true = int((p_ids > 0).sum()), int((t_ids > 0).sum())
    return greedy_matches(p, t, scores, iou), n_predicted, n_true


def greedy_matches(p: np.ndarray, t: np.ndarray, scores: np.ndarray, iou: float) -> int:
    """How many pairs, taken by descending score (>= ``iou``), use each side at most once."""
    chosen = scores >= iou
    order = np.argsort(-scores[chosen], kind="stable")
    p, t = p[chosen][order], t[chosen][order]
    if iou > 0.5:  # overlaps above one half are unique on both sides
        return len(p)
    used_p, used_t, matched = set(), set(), 0
    for a, b in zip(p.tolist(), t.tolist()):
        if a not in used_p and b not in used_t:
            used_p.add(a)
            used_t.add(b)
            matched += 1
    return matched


def _without_unlabelled_objects(predicted: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """``predicted`` (flat labels) with the objects lying mostly outside ``labelled`` erased."""
    size = int(predicted.max(initial=0)) + 1
    inside = np.bincount(predicted[labelled], minlength=size)
    total = np.bincount(predicted, minlength=size)
    unlabelled = 2 * inside < total
    unlabelled[0] = False
    return np.where(unlabelled[predicted], 0, predicted)
