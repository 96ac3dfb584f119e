"""Threshold choice and scores from quantised probability histograms."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.metrics.scores import ScoreHistogram, quantize


def test_separable_scores_get_a_threshold_between_them():
    probabilities = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.95], np.float32)[:, None]
    mask = np.array([0, 0, 0, 1, 1, 1, 255], np.uint8)[:, None]
    histogram = ScoreHistogram(["a"])
    histogram.add(probabilities, mask)
    threshold = histogram.best_thresholds()["a"]
    assert 0.3 < threshold <= 0.6
    assert histogram.scores({"a": threshold})["a"] == pytest.approx(
        {"iou": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}
    )


def test_scores_at_a_threshold_count_quantised_levels():
    rng = np.random.default_rng(0)
    probabilities = rng.random((2, 8, 8, 2)).astype(np.float32)
    mask = (rng.random((2, 8, 8, 2)) < 0.3).astype(np.uint8)
    mask[0, 0] = 255
    histogram = ScoreHistogram(["a", "b"])
    histogram.add(probabilities, mask)
    got = histogram.scores({"a": 0.4, "b": 0.7})
    for c, (name, t) in enumerate((("a", 0.4), ("b", 0.7))):
        predicted = quantize(probabilities[..., c]) >= round(t * 255)
        truth, valid = mask[..., c] == 1, mask[..., c] != 255
        tp = (predicted & truth & valid).sum()
        fp = (predicted & ~truth & valid).sum()
        fn = (~predicted & truth & valid).sum()
        assert got[name]["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert got[name]["precision"] == pytest.approx(tp / (tp + fp))


def test_predicted_and_true_shares():
    histogram = ScoreHistogram(["a"])
    histogram.add(np.array([[0.9], [0.1], [0.2], [0.8]]), np.array([[1], [1], [0], [255]]))
    assert histogram.shares({"a": 0.5}) == {"a": {"predicted": 1 / 3, "true": 2 / 3}}


def test_a_class_never_found_keeps_threshold_one_half():
    histogram = ScoreHistogram(["a"])
    histogram.add(np.array([[0.1], [0.2]]), np.array([[0], [0]]))  # no positives at all
    assert histogram.best_thresholds() == {"a": 0.5}
