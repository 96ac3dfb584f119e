"""The parcels a training run can see: chips stitched into areas, predicted as ``predict`` does,
delineated and scored for object F1; and :class:`ParcelMonitor`, which scores the validation
areas after every epoch so that early stopping and the best checkpoint follow the parcels
(``val_parcels_f1``, averaged over the last epochs) rather than a pixel loss.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from geoseg.contracts import Delineation
from geoseg.io.raster import normalize
from geoseg.models.forward import average_dihedral
from geoseg.models.sliding_window import ChipGrid, predict_array
from geoseg.training.chip_areas import stitched_areas, thinned
from geoseg.training.dataset import ChipsDirectory
from geoseg.training.tuning import object_counts, predicted_samples, true_parcels, tunable

logger = logging.getLogger(__name__)

PARCELS_MONITOR = "val_parcels_f1"
"""The object F1 of the validation areas' parcels, the mean of the last
:data:`MONITOR_WINDOW` epochs' scores, in the training logs."""
EPOCH_SCORE = "val_parcels_f1_epoch"
"""The same object F1 of this epoch alone, in the training logs."""
MONITOR_WINDOW = 3
"""Epochs averaged into :data:`PARCELS_MONITOR`. One epoch's score on about 100 val parcels
moves by 0.03-0.08 from one epoch to the next; the best single epoch was often an early, lucky
one (epochs 14-15 of 50 for some Danish fold models, whose training boundary F1 was then 0.67
against 0.77-0.85 later). The checkpoint kept is the last epoch of the best window."""
MONITOR_PIXELS = 2**18
"""Most validation pixels scored after each epoch."""
MONITOR_LEVELS = {"boundary": (0.3, 0.5), "marker": (0.3, 0.5)}
"""Thresholds tried after each epoch (the best counts): a small grid, so that an epoch's score
does not hang on one threshold before they are tuned at the end."""
MIN_MONITOR_PARCELS = 50
"""Fewest true parcels in the scored validation areas for ``auto`` to watch them: with fewer,
one parcel moves the F1 by more than 0.02 and the best epoch is noise (the demo's 20 val
parcels swing between 0.13 and 0.83 from one epoch to the next)."""
PREDICT_BATCH = 16
"""Chips per forward call when predicting areas."""


@dataclass(frozen=True)
class ParcelRoles:
    """Which model outputs and which mask bands hold extent, boundary and distance."""

    outputs: dict[str, int]
    truth_bands: dict[str, int]
    names: dict[str, str]
    """Role -> output (class) name."""


def parcel_roles(chips: ChipsDirectory, class_names: Sequence[str]) -> ParcelRoles | None:
    """The roles of a model trained on ``class_names`` of ``chips``; None when its parcels
    cannot be delineated and scored (no extent or boundary output, or no extent in the masks)."""
    targets = chips.record.targets
    outputs = {targets[n]["role"]: i for i, n in enumerate(class_names) if targets[n]["role"]}
    truth = {role: chips.classes.index(name) for role, name in chips.record.roles.items()}
    if not tunable(list(outputs)) or "extent" not in truth:
        return None
    return ParcelRoles(outputs, truth, {role: class_names[i] for role, i in outputs.items()})


def area_pieces(chips: ChipsDirectory, split: str, pixels: int) -> list[tuple]:
    """(normalised image, valid, mask) of the chips of ``split`` stitched into areas, thinned
    to about ``pixels``."""
    normalization = chips.record["normalization"]
    pieces = []
    for area in thinned(stitched_areas(chips, split), pixels):
        image = normalize(np.moveaxis(area.image, -1, 0), area.valid, normalization)
        pieces.append((image, area.valid, area.mask))
    return pieces


def area_predictor(model, chip_size: int, classes: int, tta: bool = False):
    """(image, valid) -> (h, w, classes) probabilities of ``model`` as ``predict`` gives them
    (chips overlapping by a quarter, blended; with ``tta``, averaged over the 8 dihedral
    views)."""
    grid = ChipGrid(chip_size, chip_size // 4)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False))

    forward = (lambda batch: average_dihedral(run, batch)) if tta else run
    return lambda image, valid: predict_array(image, valid, grid, forward, PREDICT_BATCH, classes)


class ParcelMonitor(keras.callbacks.Callback):
    """Adds :data:`EPOCH_SCORE` to the logs of every epoch, the best object F1 of the
    validation areas' parcels over :data:`MONITOR_LEVELS`, and :data:`PARCELS_MONITOR`, its
    mean over the last :data:`MONITOR_WINDOW` epochs. It must come before the callbacks that
    read the logs (checkpoint, early stopping, CSV). ``parcels`` is how many true parcels it
    sees."""

    def __init__(self, chips: ChipsDirectory, roles: ParcelRoles, classes: int):
        super().__init__()
        self.roles, self.classes, self.chip_size = roles, classes, chips.chip_size
        self.recent: list[float] = []
        self.pieces = area_pieces(chips, "val", MONITOR_PIXELS)
        self.parcels = sum(
            len(np.unique(labels[labels > 0]))
            for _, _, mask in self.pieces
            if (labels := true_parcels(mask, roles.truth_bands)) is not None
        )
        keys = tunable(list(roles.outputs))
        levels = {k: v for k, v in MONITOR_LEVELS.items() if k in keys}
        plain = Delineation()
        self.trials = [plain.replace(boundary=b, marker=m)
                       for b in levels.get("boundary", (plain.boundary,))
                       for m in levels.get("marker", (plain.marker,))]  # fmt: skip

    def resume_after(self, history: pd.DataFrame) -> None:
        """Carry the scores of an interrupted run's last epochs into the window."""
        if EPOCH_SCORE in history:
            self.recent = history[EPOCH_SCORE].dropna().tail(MONITOR_WINDOW - 1).tolist()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        score = 0.0  # a diverged model predicts NaN
        if np.isfinite(float(logs.get("loss", 0.0))):
            predict = area_predictor(self.model, self.chip_size, self.classes)
            samples = predicted_samples(
                predict, self.pieces, self.roles.outputs, self.roles.truth_bands
            )
            score = max(object_counts(samples, t)["f1"] for t in self.trials)
        self.recent = [*self.recent, score][-MONITOR_WINDOW:]
        logs[EPOCH_SCORE] = score
        logs[PARCELS_MONITOR] = float(np.mean(self.recent))
