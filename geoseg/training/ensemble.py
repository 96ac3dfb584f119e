"""Cross-validated training (``geoseg train --folds K``): one U-Net per spatial fold, saved as
their mean.

Each fold's model trains on the chips that share no pixel with its fold and validates on the fold
(:func:`geoseg.training.folds.spatial_folds`), so every train or val chip is predicted once by a
model that never saw it. The thresholds and the parcel delineation are tuned on those pooled
out-of-fold predictions, which cover every chip rather than one val split, and the saved model
averages the K members' outputs. The model directory holds the ensemble's ``model.keras``,
``geoseg.json`` and ``history.csv`` (every fold's epochs, with a ``fold`` column) and, under
``folds/``, each member's own model directory (``training.png`` is fold 0's). An interrupted run
resumes fold by fold.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from geoseg.contracts import CARD_NAME, MODEL_NAME, read_model_card, write_model_card
from geoseg.errors import ParameterError
from geoseg.io.outputs import output_lock, replace_with
from geoseg.models.unet import build_model, member_name
from geoseg.training.card import TrainSummary
from geoseg.training.dataset import ChipsDirectory, make_dataset
from geoseg.training.fit import fit_model
from geoseg.training.folds import spatial_folds
from geoseg.training.plan import make_plan
from geoseg.training.settings import (
    ENSEMBLE_RECORD,
    HISTORY,
    LAST,
    EpochReport,
    Progress,
    TrainSettings,
    check_fresh_start,
    check_same_run,
    partial_directory,
    run_record,
)
from geoseg.training.validation import multiclass_scores, multilabel_scores, tune_parcels

FOLDS_DIR = "folds"

logger = logging.getLogger(__name__)


def train_folds(
    chips: ChipsDirectory,
    out: Path,
    settings: TrainSettings,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_epoch: EpochReport | None = None,
    resume: bool = False,
) -> TrainSummary:
    """Train ``settings.folds`` models on spatial folds of ``chips`` (fold k with seed
    ``seed + k``) and write their ensemble to ``out``. An interrupted run keeps its finished
    folds and the fold under way; ``resume`` trains only what is left."""
    work = partial_directory(out)
    if resume:
        if not (work / ENSEMBLE_RECORD).is_file():
            raise ParameterError(f"nothing to resume: no interrupted run in {work}")
        check_same_run(json.loads((work / ENSEMBLE_RECORD).read_text()), settings, chips)
    else:
        check_fresh_start(work, out, overwrite)
    views = spatial_folds(chips, settings.folds, settings.seed)
    plan = make_plan(views[0], settings)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
        (work / FOLDS_DIR).mkdir(parents=True)
        (work / ENSEMBLE_RECORD).write_text(json.dumps(run_record(settings, chips), indent=2))
    started = time.monotonic()
    try:
        cards = [
            _fold(work, k, view, len(views), settings, resume, progress, on_epoch)
            for k, view in enumerate(views)
        ]
        card = _ensemble(work, chips, views, plan, settings, cards)
    except KeyboardInterrupt:  # the finished folds and the fold under way stay for --resume
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    (work / ENSEMBLE_RECORD).unlink()
    replace_with(work, out)
    summary = TrainSummary(out, card, card["training"]["epochs_run"], time.monotonic() - started)
    logger.info("trained %d folds in %.1f s -> %s", len(views), summary.seconds, out)
    return summary


def _fold(work: Path, k: int, view, folds: int, settings, resume, progress, on_epoch) -> dict:
    """The card of fold ``k``'s model: trained, resumed, or (resuming) as finished before."""
    out = work / FOLDS_DIR / member_name(k)
    if resume and (out / CARD_NAME).is_file():
        logger.info("fold %d of %d: finished before the interruption", k + 1, folds)
        return read_model_card(out)
    logger.info("fold %d of %d", k + 1, folds)
    member = replace(settings, folds=1, seed=settings.seed + k, init_member=k)
    with output_lock(out):
        fold = fit_model(
            view, out, member, resume and (partial_directory(out) / LAST).is_file(), True,
            progress, _tagged(on_epoch, f"{k + 1}/{folds}"),
        )  # fmt: skip
    return fold.card


def _tagged(on_epoch: EpochReport | None, fold: str) -> EpochReport | None:
    """``on_epoch`` with the fold added to the logs it is given."""
    if on_epoch is None:
        return None
    return lambda epoch, epochs, logs: on_epoch(epoch, epochs, {**logs, "fold": fold})


def _ensemble(work: Path, chips, views: list[ChipsDirectory], plan, settings, cards) -> dict:
    """Save the mean of the fold models; score and tune it on the pooled out-of-fold
    predictions (test chips by the ensemble); write its card and history."""
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("float32")  # members are saved float32; so is the ensemble
    try:
        network = replace(plan.network, members=len(views))
        ensemble = build_model(network)
        members = []
        for k in range(len(views)):
            member = keras.models.load_model(
                work / FOLDS_DIR / member_name(k) / MODEL_NAME, compile=False
            )
            ensemble.get_layer(member_name(k)).set_weights(member.get_weights())
            members.append(member)
        ensemble.save(work / MODEL_NAME)

        def dataset(view, split):
            return make_dataset(
                view, split, settings.batch_size, plan.class_bands, training=False, task=plan.task
            )

        val = [(m, dataset(v, "val")) for m, v in zip(members, views)]
        test = (ensemble, dataset(chips, "test")) if chips.files["test"] else None
        if plan.task == "multiclass":
            thresholds, scores = {}, multiclass_scores(plan, val, test)
            delineation = None
        else:
            thresholds, scores = multilabel_scores(plan, val, test)
            delineation = tune_parcels(list(zip(members, views)), plan, thresholds)
    finally:
        keras.config.set_dtype_policy(previous)

    card = _ensemble_card(cards, chips, network, settings, thresholds, scores)
    if delineation is not None:
        card["delineation"] = delineation
    write_model_card(work / CARD_NAME, card)
    histories = [
        pd.read_csv(work / FOLDS_DIR / member_name(k) / HISTORY).assign(fold=k)
        for k in range(len(views))
    ]
    pd.concat(histories, ignore_index=True).to_csv(work / HISTORY, index=False)
    shutil.copy(work / FOLDS_DIR / member_name(0) / "training.png", work / "training.png")
    return card


def _ensemble_card(cards, chips, network, settings, thresholds, scores) -> dict:
    """Fold 0's card with the ensemble's model, thresholds, pooled scores and every fold's
    training record."""
    first = cards[0]
    per_fold = [
        {
            "fold": k,
            "seed": c["training"]["seed"],
            "best_epoch": c["training"]["best_epoch"],
            "epochs_run": c["training"]["epochs_run"],
            "train_chips": c["training"]["train_chips"],
            "val_chips": c["training"]["val_chips"],
            "val_loss": c["metrics"]["val_loss"],
        }
        for k, c in enumerate(cards)
    ]
    card = {key: value for key, value in first.items() if key != "delineation"}
    card["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    card["threshold"] = thresholds
    card["metrics"] = {
        **scores,
        "val_loss": float(np.mean([f["val_loss"] for f in per_fold])),
    }
    card["model"] = {**first["model"], **network.to_dict()}
    card["training"] = {
        **first["training"],
        **settings.to_json(),
        "best_epoch": [f["best_epoch"] for f in per_fold],
        "epochs_run": sum(f["epochs_run"] for f in per_fold),
        "diverged": any(c["training"]["diverged"] for c in cards),
        "chips": str(chips.root),
        "train_chips": len(chips.files["train"]) + len(chips.files["val"]),
        "val_chips": sum(f["val_chips"] for f in per_fold),
        "test_chips": len(chips.files["test"]),
        "folds": settings.folds,
        "validation": "out_of_fold",
        "per_fold": per_fold,
    }
    return card
