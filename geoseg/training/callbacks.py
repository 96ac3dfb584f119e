"""The Keras callbacks of the fit loop: checkpoints that survive an interruption, early
stopping, and progress reports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from geoseg.training.card import describe_epoch
from geoseg.training.plan import Plan, lower_is_better
from geoseg.training.settings import BEST, BEST_STAGING, HISTORY, LAST, STATE, EpochReport, Progress

logger = logging.getLogger(__name__)


def progress_so_far(work: Path) -> tuple[int, bool]:
    """Epochs completed, and whether the loss stayed finite."""
    epoch = json.loads((work / STATE).read_text())["epoch"]
    return epoch, bool(np.isfinite(pd.read_csv(work / HISTORY)["loss"]).all())


def reset_patience(work: Path) -> None:
    """Early stopping and the plateau schedule start counting again (a new phase)."""
    state = json.loads((work / STATE).read_text())
    for name in ("stopping", "plateau"):
        state[name]["wait"] = 0.0
    (work / STATE).write_text(json.dumps(state))


class ResumePoint(keras.callbacks.Callback):
    """Saves the full model and the monitors' state every epoch; restores the state on resume.

    It must come after the ModelCheckpoint writing :data:`BEST_STAGING`, which saves
    synchronously in its ``on_epoch_end``: a staging file present here was written this epoch.
    """

    def __init__(self, work: Path, stateful: dict, restore: bool):
        super().__init__()
        self.work, self.stateful, self.restore = work, stateful, restore
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        if self.restore:
            state = json.loads((self.work / STATE).read_text())
            self.best_epoch = state.get("best_epoch", 0)
            for name, callback in self.stateful.items():
                for attribute, value in state[name].items():
                    setattr(callback, attribute, value)
        self._drop_stale_staging()

    def on_epoch_begin(self, epoch, logs=None):
        self._drop_stale_staging()

    def _drop_stale_staging(self):
        """An older staging file (e.g. half-written when a run crashed) must not become best."""
        (self.work / BEST_STAGING).unlink(missing_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        # Every file is complete or absent: an interruption mid-save cannot break a resume.
        if (self.work / BEST_STAGING).is_file():
            (self.work / BEST_STAGING).replace(self.work / BEST)
            self.best_epoch = epoch + 1
        self.model.save(self.work / f"{LAST}.partial.keras")
        (self.work / f"{LAST}.partial.keras").replace(self.work / LAST)
        state = {"epoch": epoch + 1, "best_epoch": self.best_epoch}
        for name, callback in self.stateful.items():
            state[name] = {
                a: float(getattr(callback, a))
                for a in ("best", "wait", "cooldown_counter")
                if hasattr(callback, a)
            }
        (self.work / f"{STATE}.tmp").write_text(json.dumps(state))
        (self.work / f"{STATE}.tmp").replace(self.work / STATE)


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite (quietly, unlike TerminateOnNaN)."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and not np.isfinite(float(logs.get("loss", 0.0))):
            self.model.stop_training = True


class Report(keras.callbacks.Callback):
    """Forwards batch progress and epoch logs to the caller's callbacks."""

    def __init__(self, progress: Progress | None, on_epoch: EpochReport | None):
        super().__init__()
        self.progress, self.on_epoch = progress, on_epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.progress:
            self.progress(batch + 1, self.params.get("steps") or 0)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs.setdefault(
            "learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        )
        logger.info(describe_epoch(epoch + 1, self.params["epochs"], logs))
        if self.on_epoch:
            self.on_epoch(epoch + 1, self.params["epochs"], logs)


def training_callbacks(work, plan: Plan, scoring, settings, resume, progress, on_epoch) -> list:
    mode = "min" if lower_is_better(plan.monitor) else "max"
    watch = dict(monitor=plan.monitor, mode=mode)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(work / BEST_STAGING), save_best_only=True, **watch
    )
    stopping = keras.callbacks.EarlyStopping(patience=settings.patience, **watch)
    plateau = keras.callbacks.ReduceLROnPlateau(
        factor=0.5, patience=max(1, settings.patience // 2), min_lr=settings.lr / 100, **watch
    )
    return [
        StopOnNaN(),
        *([scoring] if scoring else []),  # before every callback that reads the monitored value
        checkpoint,  # before ResumePoint, which promotes what it wrote this epoch
        stopping,
        plateau,
        keras.callbacks.CSVLogger(str(work / HISTORY), append=resume),
        keras.callbacks.TensorBoard(str(work / "logs"), write_graph=False, profile_batch=0),
        ResumePoint(
            work, {"checkpoint": checkpoint, "stopping": stopping, "plateau": plateau}, resume
        ),
        Report(progress, on_epoch),
    ]
