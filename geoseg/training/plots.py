"""Pictures written next to results: training curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_history(history: pd.DataFrame, classes: list[str], path: Path) -> None:
    """:func:`history_figure` as a PNG."""
    history_figure(history, classes).savefig(path, dpi=100)


def history_figure(history: pd.DataFrame, classes: list[str]):
    """Loss (train and validation) and IoU per class target (MAE per regression target), and
    the validation parcels' object F1 when it was watched, against epochs."""
    from matplotlib.figure import Figure

    from geoseg.training.losses import metric_key
    from geoseg.training.parcel_areas import EPOCH_SCORE, MONITOR_WINDOW, PARCELS_MONITOR

    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, iou_axes = figure.subplots(1, 2)
    epochs = history["epoch"] + 1
    for column, label in (("loss", "train"), ("val_loss", "validation")):
        if column in history:
            loss_axes.plot(epochs, history[column], marker=".", label=label)
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="loss")
    for name in classes:  # IoU of a class target, mean absolute error of a regression one
        for metric, suffix in (("iou", ""), ("mae", ", MAE")):
            for prefix, split, style in (("val_", "validation", "-"), ("", "train", ":")):
                column = prefix + metric_key(metric, name)
                if column in history:
                    label = f"{name} ({split}{suffix})"
                    iou_axes.plot(epochs, history[column], style, marker=".", label=label)
    parcels = ((EPOCH_SCORE, "parcels' object F1 (validation)", ":"),
               (PARCELS_MONITOR, f"the same, mean of {MONITOR_WINDOW} epochs", "-"))  # fmt: skip
    for column, label, style in parcels:
        if column in history:
            iou_axes.plot(epochs, history[column], style, color="black", label=label)
    iou_axes.set(
        title="IoU at 0.5, MAE of regression targets, parcels' F1",
        xlabel="epoch",
        ylabel="IoU / MAE / object F1",
        ylim=(0, 1),
    )
    for axes in (loss_axes, iou_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    return figure
