"""The point of the default loss: on thin boundaries it beats plain BCE, which under-predicts."""

from __future__ import annotations

import keras
import pytest

from geoseg import train
from geoseg.contracts import read_model_card
from geoseg.training.dataset import make_dataset, open_chips
from geoseg.training.validation import score_histogram


def boundary_at_half(model_dir, chips_dir) -> tuple[float, float, float]:
    """(predicted share, true share, F1) of the boundary class at threshold 0.5 on val chips."""
    model = keras.models.load_model(model_dir / "model.keras")
    val = make_dataset(open_chips(chips_dir), "val", 8, [1], training=False)
    histogram = score_histogram(model, val, ["boundary"])
    shares = histogram.shares({"boundary": 0.5})["boundary"]
    return (
        shares["predicted"],
        shares["true"],
        histogram.scores({"boundary": 0.5})["boundary"]["f1"],
    )


@pytest.fixture(scope="module")
def field_chips(tmp_path_factory):
    """The tiny scene with fields only (no woods or villages): boundaries between fields."""
    from geoseg import synth, tile

    root = tmp_path_factory.mktemp("fields")
    synth(str(root / "scene"), size=512, seed=3, buildings=False, non_field=0.0)
    tile([str(root / "scene" / "image.tif")], str(root / "chips"),
         labels=str(root / "scene" / "parcels.gpkg"), boundary_width="1.5", size=64,
         keep_empty=1.0, workers=1)  # fmt: skip
    return root / "chips"


@pytest.mark.slow
def test_weighted_bce_dice_finds_more_boundary_than_plain_bce(field_chips, tmp_path):
    tiny_chips = field_chips
    same = dict(classes=["boundary"], epochs=8, base_filters=8, depth=2, batch_size=8,
                patience=100, mixed_precision="off", seed=0, folds=1)  # fmt: skip
    train(tiny_chips, tmp_path / "bce", loss="bce", **same)
    train(tiny_chips, tmp_path / "bce_dice", **same)
    bce_share, true_share, bce_f1 = boundary_at_half(tmp_path / "bce", tiny_chips)
    dice_share, _, dice_f1 = boundary_at_half(tmp_path / "bce_dice", tiny_chips)
    assert 0.01 < true_share < 0.1  # a thin, rare class
    assert dice_share > bce_share  # the weighted loss dares to predict boundary
    assert dice_f1 > bce_f1 + 0.05  # and finds more of it at the default threshold
    tuned = [read_model_card(tmp_path / name)["metrics"]["val"]["boundary"]["f1"]
             for name in ("bce", "bce_dice")]  # fmt: skip
    assert tuned[1] > tuned[0]  # also after each picks its best threshold
