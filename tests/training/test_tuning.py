"""Delineation thresholds tuned for object F1 on validation chips."""

from __future__ import annotations

import numpy as np

from geoseg.contracts import Delineation
from geoseg.training.tuning import predicted_samples, tunable, tune_delineation, tune_thresholds


def grid_chip(cells: int = 4, size: int = 64):
    """A chip of ``cells`` x ``cells`` square parcels with 1 px outlines: (extent, boundary)."""
    extent = np.ones((size, size), np.uint8)
    boundary = np.zeros((size, size), np.uint8)
    step = size // cells
    boundary[::step, :] = boundary[:, ::step] = 1
    boundary[-1, :] = boundary[:, -1] = 1
    return extent, boundary


def chips_with_faint_boundaries(strength: float, n: int = 3):
    """Chips whose predicted boundary is ``strength`` on the outlines and 0 elsewhere."""
    extent, boundary = grid_chip()
    mask = np.stack([extent, boundary], axis=-1)
    image = np.stack([extent * 1.0, boundary * strength], axis=-1).astype(np.float32)
    valid = np.ones(extent.shape, bool)
    return [(image, valid, mask) for _ in range(n)]


def test_boundary_only_threshold_is_tuned_below_a_faint_boundary():
    chips = chips_with_faint_boundaries(0.35)
    record = tune_delineation(
        lambda image, valid: image[..., 1:], chips, {"boundary": 0}, {"extent": 0, "boundary": 1},
        Delineation(boundary=0.5),
    )  # fmt: skip
    assert record["tuned_for"] == "object_f1"
    assert record["val_objects_untuned"]["f1"] < 0.5  # at 0.5 the outlines vanish: one parcel
    assert record["thresholds"]["boundary"] <= 0.3
    assert record["val_objects"]["f1"] > 0.9 and record["val_objects"]["true"] == 3 * 16


def test_extent_and_boundary_are_tuned_together():
    chips = chips_with_faint_boundaries(0.35)
    record = tune_delineation(
        lambda image, _: image, chips, {"extent": 0, "boundary": 1}, {"extent": 0, "boundary": 1},
        Delineation(extent=0.5, boundary=0.5),
    )  # fmt: skip
    assert set(record["thresholds"]) == {"extent", "boundary", "parcel", "merge", "split", "join"}
    assert record["val_objects"]["f1"] > record["val_objects_untuned"]["f1"]
    assert record["val_objects"]["f1"] > 0.9


def test_a_parcel_threshold_drops_land_the_extent_half_believes_is_field():
    extent, boundary = grid_chip()
    extent[: 64 // 4] = 0  # the top row of cells is not field: a village
    mask = np.stack([extent, boundary], axis=-1)
    predicted_extent = np.where(extent == 1, 0.95, 0.75)  # above every extent threshold
    image = np.stack([predicted_extent, boundary * 0.9], axis=-1).astype(np.float32)
    chips = [(image, np.ones(extent.shape, bool), mask)] * 2
    record = tune_delineation(
        lambda image, _: image, chips, {"extent": 0, "boundary": 1}, {"extent": 0, "boundary": 1},
        Delineation(extent=0.5, boundary=0.5),
    )  # fmt: skip
    assert 0.75 < record["thresholds"]["parcel"] <= 0.95
    assert record["val_objects"]["predicted"] == record["val_objects"]["matched"] == 2 * 12


def fields_a_marker_threshold_cannot_part():
    """A chip (mask, predicted extent, boundary and distance) of two 40 px fields whose shared
    edge the prediction misses over 12 px, where its distance stays at 0.4, and a narrow field
    whose predicted distance peaks at 0.35: a marker level that parts the two loses the third."""
    rows, cols = np.mgrid[:64, :128]
    ids = np.zeros((64, 128), np.int32)
    ids[4:44, 4:44], ids[4:44, 46:86], ids[10:30, 100:112] = 1, 2, 3
    extent = ((rows >= 2) & (rows < 46) & (cols >= 2) & (cols < 88)) | (
        (rows >= 8) & (rows < 32) & (cols >= 98) & (cols < 114)
    )
    boundary = extent & (ids == 0)
    predicted_boundary = boundary * 0.9
    predicted_boundary[20:32, 44:46] = 0.0  # the missed stretch
    cones = [1 - 0.6 * np.hypot(rows - 24, cols - c) / 21 for c in (24, 66)]
    distance = np.where(ids > 0, np.clip(np.maximum(*cones), 0, 1), 0.0)
    distance[20:32, 44:46] = 0.4
    distance[ids == 3] = 0.35
    mask = np.stack([extent, boundary], axis=-1).astype(np.uint8)
    image = np.stack([extent * 0.9, predicted_boundary, distance], axis=-1).astype(np.float32)
    return mask, image


def test_split_and_join_are_tuned_where_no_marker_level_parts_the_fields():
    mask, image = fields_a_marker_threshold_cannot_part()
    chips = [(image, np.ones(mask.shape[:2], bool), mask)] * 17  # 51 parcels: enough to tune
    record = tune_delineation(
        lambda image, _: image, chips, {"extent": 0, "boundary": 1, "distance": 2},
        {"extent": 0, "boundary": 1}, Delineation(),
    )  # fmt: skip
    assert record["thresholds"]["split"] > 0
    assert record["val_objects"]["matched"] == record["val_objects"]["predicted"] == 17 * 3
    samples = predicted_samples(lambda image, _: image, chips, {"extent": 0, "boundary": 1,
                                "distance": 2}, {"extent": 0, "boundary": 1})  # fmt: skip
    keys = ["extent", "boundary", "marker", "parcel", "merge"]
    _, without = tune_thresholds(samples, Delineation(), keys)
    assert without["matched"] < 17 * 3  # every marker level fuses two fields or loses one
    few = tune_delineation(
        lambda image, _: image, chips[:16], {"extent": 0, "boundary": 1, "distance": 2},
        {"extent": 0, "boundary": 1}, Delineation(),
    )  # fmt: skip
    assert few["thresholds"]["split"] == few["thresholds"]["join"] == 0  # 48 parcels: noise


def test_nothing_to_tune_without_extent_truth_or_parcel_outputs():
    chips = chips_with_faint_boundaries(0.9)
    none = tune_delineation(lambda i, v: i, chips, {"boundary": 1}, {"boundary": 1}, Delineation())
    assert none is None
    assert tunable(["distance"]) == [] and tunable(["extent", "distance"]) == [
        "extent",
        "marker",
        "parcel",
    ]


def test_training_tunes_the_delineation_and_predict_records_it(tiny_model, tiny_chips, tmp_path):
    import geopandas as gpd

    from geoseg.contracts import PredictionTags, read_model_card
    from geoseg.inference.predictor import predict

    card = read_model_card(tiny_model)
    tuned = card["delineation"]
    keys = {"extent", "boundary", "parcel", "merge", "split", "join"}
    assert tuned["tuned_for"] == "object_f1" and set(tuned["thresholds"]) == keys
    assert tuned["val_objects"]["f1"] >= tuned["val_objects_untuned"]["f1"]
    assert tuned["val_objects"]["true"] > 0
    assert tuned["method"] == "watershed"
    # the fit report: parcels of (a bounded sample of) the training areas at the same thresholds
    fit = tuned["fit_objects"]
    assert fit["true"] > 0 and 0 <= fit["matched"] <= min(fit["true"], fit["predicted"])
    assert 0 < tuned["fit_areas"]["pixels"] <= 2**19
    image = tiny_chips.parent / "scene" / "image.tif"
    summary = predict(image, tiny_model, tmp_path / "p.tif", vectors=tmp_path / "p.gpkg",
                      mode="parcels", block_size=128)  # fmt: skip
    assert PredictionTags.read(tmp_path / "p.tif").delineation == tuned["thresholds"]
    assert summary.vectors.polygons == len(gpd.read_file(tmp_path / "p.gpkg"))
    assert set(tuned["tta"]["thresholds"]) == keys  # tuned apart for --tta
    assert tuned["val_areas"]["areas"] > 0
    predict(image, tiny_model, tmp_path / "t.tif", tta=True, block_size=256)
    assert PredictionTags.read(tmp_path / "t.tif").delineation == tuned["tta"]["thresholds"]


def test_the_fit_report_tells_underfitting_from_overfitting(tiny_model):
    from geoseg.contracts import read_model_card
    from geoseg.training.card import TrainSummary, fit_verdict

    assert fit_verdict(0.45, 0.40).startswith("underfitting")
    assert fit_verdict(0.95, 0.50).startswith("overfitting")
    assert fit_verdict(0.90, 0.80) == "the fit and the validation agree"
    card = read_model_card(tiny_model)
    text = TrainSummary(tiny_model, dict(card), 2, 1.0).describe()
    fit = card["delineation"]["fit_objects"]
    assert f"fit: parcels of {card['delineation']['fit_areas']['areas']} train areas" in text
    assert f"F1 {fit['f1']:.3f}" in text and "parcels by a watershed of the field extent" in text
