"""The model card a run writes, and the lines that describe a run and its epochs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from geoseg.contracts import CARD_SCHEMA, delineation_method, describe_delineation, role_names
from geoseg.training.losses import CATEGORICAL_NAMES, REGRESSION_LOSS, WEIGHT_CAP
from geoseg.training.parcel_areas import PARCELS_MONITOR
from geoseg.training.plan import lower_is_better
from geoseg.training.settings import STATE
from geoseg.version import __version__

FITTED = 0.8
"""Object F1 on its own training areas below which a model is said to underfit."""

OVERFIT_GAP = 0.25
"""Object F1 on the training areas this far above the validation's: overfitting."""


@dataclass
class TrainSummary:
    """What a finished run produced, for a final table."""

    out: Path
    card: dict
    epochs_run: int
    seconds: float
    resumed_from: int = 0

    def describe(self) -> str:
        training, metrics = self.card["training"], self.card["metrics"]
        multiclass = self.card.get("task") == "multiclass"
        at = "each pixel's likeliest class" if multiclass else "thresholds tuned on these val chips"
        best = training["best_epoch"]
        if isinstance(best, list):  # --folds: one per fold, validated out of fold
            best = f"{training['folds']} folds, best epochs " + ", ".join(map(str, best))
            at += ", out of fold"
        else:
            best = f"best epoch {best}"
        lines = [
            f"trained {self.epochs_run} epochs in {self.seconds:.0f} s "
            f"({best}, {training['precision']}) -> {self.out}",
            f"validation, {training['val_chips']} chips, at {at}"
            + ("" if multiclass else " (optimistic)")
            + (f"; mean IoU {metrics['val_mean_iou']:.3f}" if multiclass else "")
            + ":",
            *self._table(metrics["val"]),
        ]
        if "test" in metrics:
            at = (
                "mean IoU {:.3f}".format(metrics["test_mean_iou"])
                if multiclass
                else "at the val thresholds"
            )
            lines.append(f"held-out test, {training['test_chips']} test chips, {at}:")
            lines.extend(self._table(metrics["test"]))
        roles = role_names(self.card["targets"])
        if not multiclass and delineation_method(roles):
            lines.append(describe_delineation(roles))
        if "delineation" in self.card:
            tuned = self.card["delineation"]
            for record, how in ((tuned, ""), (tuned.get("tta"), " with `tta`")):
                if record:
                    lines.append(self._parcels_line(record, how))
            if "fit_objects" in tuned:
                lines.append(self._fit_line(tuned))
        if training["diverged"]:
            lines.append("the loss diverged at the end; the model is the best epoch before that")
        return "\n".join(lines)

    @staticmethod
    def _fit_line(record: dict) -> str:
        fit, val = record["fit_objects"], record["val_objects"]
        return (
            f"fit: parcels of {record['fit_areas']['areas']} train areas F1 {fit['f1']:.3f} "
            f"({fit['matched']} of {fit['true']}, {fit['predicted']} predicted), val "
            f"{val['f1']:.3f}: {fit_verdict(fit['f1'], val['f1'])}"
        )

    @staticmethod
    def _parcels_line(record: dict, how: str) -> str:
        found, at = record["val_objects"], record["thresholds"]
        return (
            f"parcels on the val areas{how} (one to one at IoU >= 0.5): F1 {found['f1']:.3f} "
            f"(precision {found['precision']:.3f}, recall {found['recall']:.3f}; "
            f"{found['matched']} of {found['true']}) at "
            + ", ".join(f"{key} {value:g}" for key, value in at.items())
        )

    def _table(self, scores: dict) -> list[str]:
        """A header and one row per target: threshold, IoU, F1, precision, recall for a class;
        the marker threshold, MAE and RMSE for a regression target."""
        header = f"{'threshold':>10}{'IoU':>8}{'F1':>8}{'precision':>11}{'recall':>8}"
        lines = [f"{'target':<16}{header}"]
        for name, m in scores.items():
            at = self.card["threshold"].get(name)
            threshold = f"{name:<16}" + ("argmax".rjust(10) if at is None else f"{at:>10.3f}")
            if "mae" in m:
                lines.append(f"{threshold}   MAE {m['mae']:.3f}, RMSE {m['rmse']:.3f} (regression)")
                continue
            lines.append(
                f"{threshold}{m['iou']:>8.3f}{m['f1']:>8.3f}{m['precision']:>11.3f}"
                f"{m['recall']:>8.3f}"
            )
        return lines


def describe_epoch(epoch: int, epochs: int, logs: dict) -> str:
    """One line per epoch: losses, mean IoU, the parcels' object F1, learning rate."""
    parts = [f"epoch {epoch}/{epochs}"]
    if "fold" in logs:  # --folds
        parts.insert(0, f"fold {logs['fold']}")
    for key in ("loss", "val_loss", "iou", "val_iou", PARCELS_MONITOR):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2g}")
    return "  ".join(parts)


def fit_verdict(fit_f1: float, val_f1: float) -> str:
    """What the object F1 on the training areas against the validation areas says of a model."""
    if fit_f1 < FITTED:
        return (
            "underfitting: it does not delineate its own training parcels; train longer, "
            "wider or from pretrained encoder weights"
        )
    if fit_f1 - val_f1 > OVERFIT_GAP:
        return "overfitting: it fits its training parcels far better; more labelled areas help"
    return "the fit and the validation agree"


def checkpoint_epoch(work: Path, history: pd.DataFrame, monitor: str) -> int:
    """The epoch (1-based) whose weights are in best.keras."""
    best_epoch = json.loads((work / STATE).read_text()).get("best_epoch", 0)
    if best_epoch:
        return best_epoch
    column = history[monitor]  # a run resumed from a state without best_epoch
    return int(column.idxmin() if lower_is_better(monitor) else column.idxmax()) + 1


def model_card(chips, plan, settings, thresholds, scores, best_row, history) -> dict:

    weighted = settings.loss == "bce_dice"
    weights = dict(
        zip(plan.class_targets, plan.class_weights if weighted else [1.0] * len(plan.class_weights))
    )
    multiclass = plan.task == "multiclass"
    record = chips.record
    losses = {"class": settings.loss, "regression": REGRESSION_LOSS}
    targets = {
        name: {**chips.targets[name], "loss": losses[kind]}
        for name, kind in zip(plan.class_names, plan.kinds)
        if not multiclass
    }
    if multiclass:  # one softmax: no roles (no parcel delineation from it yet)
        targets = {
            name: {"kind": "class", "role": None, "loss": CATEGORICAL_NAMES[settings.loss]}
            for name in plan.class_names
        }
    return {
        "schema_version": CARD_SCHEMA,
        "task": plan.task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "geoseg": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "classes": plan.class_names,
        "targets": targets,
        "bands": record["bands"],
        "chip_size": chips.chip_size,
        "input_multiple": plan.network.divisor,
        "normalization": record["normalization"],
        "class_weights": weights,
        "class_weights_source": plan.weights_source if weighted else f"none (loss {settings.loss})",
        "class_weight_cap": WEIGHT_CAP,
        "loss": {
            "name": settings.loss,
            "dice_weight": settings.dice_weight,
            "regression": REGRESSION_LOSS,
        },
        "threshold": thresholds,
        "metrics": {**scores, "val_loss": float(best_row["val_loss"])},
        "model": {"architecture": "unet", **plan.network.to_dict()},
        "replicas": plan.replicas,
        "training": {
            **settings.to_json(),
            "monitor": plan.monitor,
            "classes": plan.class_names,
            "precision": plan.precision,
            "best_epoch": int(best_row["epoch"]) + 1,
            "epochs_run": len(history),
            "diverged": not bool(np.isfinite(history["loss"]).all()),
            "chips": str(chips.root),
            "train_chips": len(chips.files["train"]),
            "val_chips": len(chips.files["val"]),
            "test_chips": len(chips.files["test"]),
        },
    }
