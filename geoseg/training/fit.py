"""Train the U-Net on a chips directory and write the model directory.

The run happens in a hidden sibling of the output (``.NAME.partial``) holding checkpoints and
logs; ``resume=True`` continues it from its last epoch. Only a finished run is moved to the
output, with ``model.keras``, ``geoseg.json``, ``history.csv``, ``training.png`` and ``logs/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from geoseg.contracts import CARD_NAME, MODEL_NAME, write_model_card
from geoseg.device import training_strategy
from geoseg.errors import GeosegError, ParameterError, TrainingError, first_line
from geoseg.io.outputs import check_output, replace_with
from geoseg.models.config import UNET
from geoseg.models.unet import build_model
from geoseg.training.callbacks import progress_so_far, reset_patience, training_callbacks
from geoseg.training.card import TrainSummary, checkpoint_epoch, model_card
from geoseg.training.dataset import ChipsDirectory, make_dataset
from geoseg.training.losses import (
    CategoricalSegmentationLoss,
    SegmentationLoss,
    channel_weights,
    multiclass_metrics,
    training_metrics,
)
from geoseg.training.parent import head_sources, load_parent_weights
from geoseg.training.plan import Plan, describe_plan, make_plan, parcel_monitor
from geoseg.training.plots import plot_history
from geoseg.training.settings import (
    BEST,
    BEST_STAGING,
    ENCODER_RECORD,
    HISTORY,
    LAST,
    PARENT_RECORD,
    SETTINGS,
    STATE,
    TrainSettings,
    check_fresh_start,
    partial_directory,
    resumable_settings,
    run_record,
)
from geoseg.training.validation import multiclass_scores, multilabel_scores, tune_parcels

logger = logging.getLogger(__name__)


AUTO_EPOCH_CHIPS = 128
"""Chips an epoch draws at least by default: eight batches of 16. A small train split (the
Danish folds' 38-44 chips of 64 px: three steps) is passed over several times, so the network
gets enough updates to fit its own parcels (docs/benchmarks.md: fit 0.64 -> 0.70, object F1
on the unseen half +0.06 plain)."""
UNFREEZE_LR_FACTOR = 0.1
"""After ``--freeze-encoder-epochs``, the whole network trains at this share of ``--lr``."""


def fit_model(chips_dir, out: Path, settings: TrainSettings, resume, overwrite, progress, on_epoch):
    """Train one model (``settings.folds`` is 1) and write it to ``out``, whose lock the caller
    holds; ``resume`` continues an interrupted run from its last epoch."""
    work = partial_directory(out)
    settings, plan, strategy = _prepare(chips_dir, out, work, settings, resume, overwrite)
    plan, scoring = parcel_monitor(chips_dir, plan, settings)
    logger.info(describe_plan(plan, settings, chips_dir))

    started = time.monotonic()
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(plan.precision)
    try:
        keras.utils.set_random_seed(settings.seed)
        with strategy.scope():
            try:
                model, initial_epoch = _model(work, plan, settings, resume)
            except GeosegError:  # e.g. encoder weights for another encoder
                if not resume:
                    shutil.rmtree(work, ignore_errors=True)
                raise
        if resume and scoring is not None:
            scoring.resume_after(pd.read_csv(work / HISTORY))
        train_data, val_data, test_data = _datasets(chips_dir, settings, plan, initial_epoch)
        run = _Run(work, plan, settings, strategy, scoring, progress, on_epoch)
        _fit_phases(run, model, train_data, val_data, initial_epoch, resume)
        card = _finish(work, chips_dir, plan, settings, val_data, test_data)
    except tf.errors.OpError as exc:  # e.g. an unreadable chip, out of memory
        raise TrainingError(f"training failed: {first_line(exc)}") from None
    finally:
        keras.config.set_dtype_policy(previous_policy)
    for name in (BEST, LAST, STATE, SETTINGS, BEST_STAGING, ENCODER_RECORD, PARENT_RECORD):
        (work / name).unlink(missing_ok=True)
    replace_with(work, out)
    summary = TrainSummary(
        out, card, card["training"]["epochs_run"] - initial_epoch, time.monotonic() - started,
        initial_epoch,
    )  # fmt: skip
    logger.info(
        "trained %d epochs in %.1f s (best epoch %d) -> %s",
        summary.epochs_run, summary.seconds, card["training"]["best_epoch"], out,
    )  # fmt: skip
    return summary


def _prepare(chips_dir, out: Path, work: Path, settings: TrainSettings, resume, overwrite):
    """The run's settings (the interrupted run's when resuming), plan and distribution
    strategy; a fresh run's work folder is made."""
    stored_precision = None
    if resume:
        settings, stored_precision = resumable_settings(work, settings, chips_dir)
    plan = make_plan(chips_dir, settings)
    strategy, replicas = training_strategy(settings.devices)
    if strategy.num_replicas_in_sync > settings.batch_size:
        raise ParameterError(
            f"`batch_size` {settings.batch_size} is smaller than the {replicas} it is split over"
        )
    if resume:
        check_output(out, overwrite)
        plan = replace(plan, precision=stored_precision)
    else:
        _start_fresh(work, out, overwrite, settings, chips_dir, plan)
    return settings, replace(plan, replicas=replicas), strategy


def _datasets(chips_dir, settings: TrainSettings, plan: Plan, initial_epoch: int):
    """The train, val and (optional, else None) test datasets."""
    # A resumed run draws new orders and flips instead of replaying those of epoch 1.
    chips = len(chips_dir.files["train"])
    repeats = epoch_repeats(chips, settings.epoch_chips)
    if repeats > 1:
        logger.info("an epoch passes %d times over the %d train chips", repeats, chips)
    train_data = make_dataset(
        chips_dir, "train", settings.batch_size, plan.class_bands, training=True,
        augment_chips=settings.augment, jitter=settings.jitter,
        seed=settings.seed + 1000 * initial_epoch, task=plan.task,
        repeats=repeats,
    )  # fmt: skip
    val_data = make_dataset(
        chips_dir, "val", settings.batch_size, plan.class_bands, training=False, task=plan.task
    )
    test_data = None
    if chips_dir.files["test"]:
        test_data = make_dataset(
            chips_dir, "test", settings.batch_size, plan.class_bands, training=False,
            task=plan.task,
        )  # fmt: skip
    return train_data, val_data, test_data


@dataclass(frozen=True)
class _Run:
    """What the fit loop of one run needs besides the model and data."""

    work: Path
    plan: Plan
    settings: TrainSettings
    strategy: object
    scoring: object
    progress: object
    on_epoch: object


def _fit_phases(run: _Run, model, train_data, val_data, initial_epoch: int, resume: bool) -> None:
    """``model.fit`` up to ``settings.epochs``: a frozen-encoder phase first when asked (an
    early stop there goes on unfrozen), then the whole network."""
    settings, epoch = run.settings, initial_epoch
    while epoch < settings.epochs:
        frozen = epoch < settings.freeze_encoder_epochs
        end = min(settings.freeze_encoder_epochs, settings.epochs) if frozen else settings.epochs
        with run.strategy.scope():
            _enter_phase(model, run.plan, settings, frozen)
        callbacks = training_callbacks(
            run.work, run.plan, run.scoring, settings, resume or epoch > initial_epoch,
            run.progress, run.on_epoch,
        )  # fmt: skip
        model.fit(
            train_data, validation_data=val_data, epochs=end, initial_epoch=epoch,
            callbacks=callbacks, shuffle=False, verbose=0,  # the dataset reshuffles itself
        )  # fmt: skip
        epoch, finite = progress_so_far(work=run.work)
        if not (frozen and finite):
            break
        reset_patience(run.work)


def _start_fresh(
    work: Path, out: Path, overwrite: bool, settings: TrainSettings, chips, plan
) -> None:
    """Refuse to clobber a finished model or a resumable run unless ``overwrite``."""
    check_fresh_start(work, out, overwrite)
    shutil.rmtree(work, ignore_errors=True)  # also a run stopped before its first epoch
    work.mkdir(parents=True)
    run = {**run_record(settings, chips), "precision": plan.precision}
    (work / SETTINGS).write_text(json.dumps(run, indent=2))


def _model(work: Path, plan: Plan, settings: TrainSettings, resume: bool):
    """A compiled model and the epoch to start from (the last checkpoint's when resuming)."""
    if resume:
        state = json.loads((work / STATE).read_text())
        history = pd.read_csv(work / HISTORY).iloc[: state["epoch"]]
        history.to_csv(work / HISTORY, index=False)
        logger.info("resuming %s after epoch %d", work, state["epoch"])
        return keras.models.load_model(work / LAST), state["epoch"]
    model = build_model(plan.network)
    if settings.init_from is not None:
        sources = head_sources(settings.init_from, plan.network, plan.head_roles)
        record = load_parent_weights(model, settings.init_from, sources, settings.init_member)
        (work / PARENT_RECORD).write_text(json.dumps(record))
    elif plan.network.encoder != UNET:
        from geoseg.models.encoders import load_encoder_weights

        record = load_encoder_weights(model, plan.network, settings.encoder_weights or "imagenet")
        (work / ENCODER_RECORD).write_text(json.dumps(record))
    _compile(model, plan, settings, settings.lr)
    return model, 0


def _compile(model, plan: Plan, settings: TrainSettings, lr: float) -> None:
    """Adam at ``lr``, the task's loss and metrics."""
    if plan.task == "multiclass":
        loss = CategoricalSegmentationLoss(
            plan.class_weights, settings.dice_weight, kind=settings.loss
        )
        metrics = multiclass_metrics(plan.class_names)
    else:
        loss = SegmentationLoss(
            settings.loss,
            channel_weights(plan.kinds, plan.class_weights),
            settings.dice_weight,
            kinds=plan.kinds,
        )
        metrics = training_metrics(plan.class_names, plan.kinds)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=metrics)


def _enter_phase(model, plan: Plan, settings: TrainSettings, frozen: bool) -> None:
    """Freeze or unfreeze a pretrained encoder (recompiling, at a lower rate once unfrozen
    after a frozen phase) when it is not already so; a no-op for geoseg's own U-Net."""
    if plan.network.encoder == UNET:
        return
    from geoseg.models.encoders import set_encoder_trainable

    if model.get_layer("encoder").trainable != frozen:
        return
    set_encoder_trainable(model, not frozen)
    lr = settings.lr
    if not frozen and settings.freeze_encoder_epochs:
        lr *= UNFREEZE_LR_FACTOR
    _compile(model, plan, settings, lr)
    logger.info("encoder %s; learning rate %.2g", "frozen" if frozen else "trainable", lr)


def epoch_repeats(train_chips: int, epoch_chips: int | str) -> int:
    """Passes over ``train_chips`` chips that draw at least ``epoch_chips`` in one epoch
    (``auto``: :data:`AUTO_EPOCH_CHIPS`)."""
    wanted = AUTO_EPOCH_CHIPS if epoch_chips == "auto" else epoch_chips
    return max(1, -(-wanted // max(train_chips, 1)))


def _finish(
    work: Path, chips: ChipsDirectory, plan: Plan, settings, val_data, test_data=None
) -> dict:
    """Pick thresholds on val with the best checkpoint; write model, card and plot.

    Test chips, when there are any, are scored at the val thresholds (an unbiased estimate).
    """
    history = pd.read_csv(work / HISTORY)
    monitored = history[plan.monitor].where(np.isfinite(history["loss"]))
    if not (work / BEST).is_file() or not np.isfinite(monitored).any():
        shutil.rmtree(work)
        raise TrainingError(
            f"training diverged (the loss became NaN or infinite); try a lower `lr` than "
            f"{settings.lr:g}"
        )
    best = keras.models.load_model(work / BEST)
    keras.config.set_dtype_policy("float32")  # the saved model is float32; predict picks
    final = build_model(plan.network)
    final.set_weights(best.get_weights())
    final.save(work / MODEL_NAME)
    test = None if test_data is None else (final, test_data)
    if plan.task == "multiclass":
        thresholds, scores = {}, multiclass_scores(plan, [(final, val_data)], test)
    else:
        thresholds, scores = multilabel_scores(plan, [(final, val_data)], test)

    plot_history(history, plan.class_names, work / "training.png")
    best_row = history.iloc[checkpoint_epoch(work, history, plan.monitor) - 1]
    card = model_card(chips, plan, settings, thresholds, scores, best_row, history)
    if (work / PARENT_RECORD).is_file():
        card["parent"] = json.loads((work / PARENT_RECORD).read_text())
    if (work / ENCODER_RECORD).is_file():
        card["encoder"] = {
            **json.loads((work / ENCODER_RECORD).read_text()),
            "freeze_epochs": settings.freeze_encoder_epochs,
            "unfrozen_lr": settings.lr
            * (UNFREEZE_LR_FACTOR if settings.freeze_encoder_epochs else 1),
        }
    delineation = (
        None if plan.task == "multiclass" else tune_parcels([(final, chips)], plan, thresholds)
    )
    if delineation is not None:
        card["delineation"] = delineation
    write_model_card(work / CARD_NAME, card)
    return card
