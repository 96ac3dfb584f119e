"""``geoseg.train``: one model, or an ensemble of spatial fold models for small parcel sets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from geoseg.io.outputs import check_apart, output_lock
from geoseg.training.card import TrainSummary
from geoseg.training.dataset import ChipsDirectory, open_chips, select_classes
from geoseg.training.ensemble import train_folds
from geoseg.training.fit import fit_model
from geoseg.training.folds import AUTO_FOLDS, auto_folds
from geoseg.training.parcel_areas import parcel_roles
from geoseg.training.settings import (
    ENSEMBLE_RECORD,
    LAST,
    EpochReport,
    Progress,
    TrainSettings,
    interrupted,
    partial_directory,
)


def train(
    chips: str | Path | ChipsDirectory,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_epoch: EpochReport | None = None,
    **settings,
) -> TrainSummary:
    """Train a BatchNorm U-Net on a chips directory and write the model directory ``out``.

    ``settings`` are the fields of :class:`TrainSettings`. ``progress(step, steps)`` is called
    after every training batch, ``on_epoch(epoch, epochs, logs)`` after every epoch. With
    ``folds`` >= 2, one model is trained per spatial fold and ``out`` holds their ensemble
    (:func:`geoseg.training.ensemble.train_folds`). Ctrl-C raises
    :class:`geoseg.errors.Interrupted`, which says whether ``resume`` can continue the run.
    """
    settings = TrainSettings(**settings)
    settings.check()
    chips_dir = chips if isinstance(chips, ChipsDirectory) else open_chips(chips)
    out = Path(out).absolute()
    check_apart([out], [chips_dir.root, settings.init_from])
    with output_lock(out):
        try:
            return _train(chips_dir, out, settings, resume, overwrite, progress, on_epoch)
        except KeyboardInterrupt:
            raise interrupted(out) from None


def _train(chips_dir, out: Path, settings: TrainSettings, resume, overwrite, progress, on_epoch):
    """The body of :func:`train`, run while it holds the lock on ``out``."""
    if settings.folds == AUTO_FOLDS:
        work = partial_directory(out)
        if resume and (work / LAST).is_file():  # one model's interrupted run
            folds = 1
        elif resume and (work / ENSEMBLE_RECORD).is_file():  # an interrupted ensemble
            folds = json.loads((work / ENSEMBLE_RECORD).read_text())["settings"]["folds"]
        else:
            folds = auto_folds(chips_dir, _delineates(chips_dir, settings), settings.seed)
        settings = replace(settings, folds=folds)
    if settings.folds > 1:
        return train_folds(chips_dir, out, settings, overwrite, progress, on_epoch, resume)
    return fit_model(chips_dir, out, settings, resume, overwrite, progress, on_epoch)


def _delineates(chips: ChipsDirectory, settings: TrainSettings) -> bool:
    """Whether the model trained on ``chips`` with ``settings`` delineates parcels."""
    if settings.task == "multiclass":
        return False
    names = [chips.classes[b] for b in select_classes(chips, settings.classes)]
    return parcel_roles(chips, names) is not None
