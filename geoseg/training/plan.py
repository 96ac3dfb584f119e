"""A run's settings resolved against its chips: targets, weights, network, precision and
the value that picks the best epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path

from geoseg.contracts import BACKGROUND
from geoseg.device import resolve_precision
from geoseg.errors import InputFileError, ParameterError
from geoseg.models.config import UNET, UNetConfig
from geoseg.training.dataset import ChipsDirectory, check_multiclass_bands, select_classes
from geoseg.training.losses import (
    REGRESSION_LOSS,
    metric_key,
    resolve_class_weights,
    resolve_multiclass_weights,
)
from geoseg.training.parcel_areas import (
    MIN_MONITOR_PARCELS,
    PARCELS_MONITOR,
    ParcelMonitor,
    ParcelRoles,
    parcel_roles,
)
from geoseg.training.parent import head_sources
from geoseg.training.settings import TrainSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Settings resolved against the chips: classes, weights, network, precision."""

    class_names: list[str]
    """Every target trained on, in output order (class and regression targets)."""
    class_bands: list[int]
    class_weights: list[float]
    """One per class target (regression targets have none)."""
    weights_source: str
    network: UNetConfig
    precision: str
    kinds: list[str]
    """``class`` or ``regression``, one per target."""
    task: str = "multilabel"
    replicas: str = "one CPU"
    """What training runs on, e.g. ``2 GPUs (MirroredStrategy)``."""
    monitor: str = "val_loss"
    """The log value that picks the best epoch (``auto`` resolved)."""
    roles: ParcelRoles | None = None
    """Where the parcels' extent, boundary and distance are, when they can be delineated."""
    head_roles: dict[str, str | None] = field(default_factory=dict)
    """Target name -> its role (``extent``, ``boundary``, ``distance``, or None)."""

    @property
    def class_targets(self) -> list[str]:
        return [n for n, k in zip(self.class_names, self.kinds) if k == "class"]

    @property
    def regression_targets(self) -> list[str]:
        return [n for n, k in zip(self.class_names, self.kinds) if k == "regression"]


def make_plan(chips: ChipsDirectory, settings: TrainSettings) -> Plan:
    if settings.encoder != UNET:
        from geoseg.models.encoders import check_encoder

        check_encoder(settings.encoder)
    if settings.task == "multiclass":
        class_bands, class_names, kinds, weights, source = _multiclass_outputs(chips, settings)
        class_targets = class_names
    else:
        class_bands = select_classes(chips, settings.classes)
        class_names = [chips.classes[b] for b in class_bands]
        kinds = chips.kinds(class_bands)
        class_targets = [n for n, k in zip(class_names, kinds) if k == "class"]
        weights, source = resolve_class_weights(
            settings.class_weights, class_targets, chips.record.class_frequencies
        )
    network = UNetConfig(
        chips.band_count, len(class_names), settings.depth, settings.base_filters,
        settings.dropout, heads=tuple(class_names), task=settings.task, encoder=settings.encoder,
    )  # fmt: skip
    if chips.chip_size % network.divisor:
        why = "2**depth" if settings.encoder == UNET else f"what {settings.encoder} needs"
        fix = "use a smaller `depth` or " if settings.encoder == UNET else ""
        raise ParameterError(
            f"chip size {chips.chip_size} is not divisible by {why} = {network.divisor}; "
            f"{fix}tile with another `size`"
        )
    head_roles = {n: (chips.record.targets.get(n) or {}).get("role") for n in class_names}
    if settings.init_from:
        head_sources(settings.init_from, network, head_roles)  # one line when one is missing
    for split in ("train", "val"):
        if not chips.files[split]:
            raise ParameterError(f"{chips.root}: the {split} split has no chips")
    missing = [p for pair in chain(*chips.files.values()) for p in pair if not Path(p).is_file()]
    if missing:
        raise InputFileError(
            f"{chips.root}: {len(missing)} chip files listed in chips.gpkg are missing, "
            f"e.g. {Path(missing[0]).relative_to(chips.root)}; tile again"
        )
    keys = [metric_key("iou", c) for c in class_names]
    if len(set(keys)) != len(keys):
        raise ParameterError(
            f"class names {', '.join(class_names)} are too alike for metric names; rename one"
        )
    monitors = {"val_loss", "val_iou"} if class_targets else {"val_loss"}
    monitors |= {f"val_{metric_key(m, c)}" for m in ("iou", "f1") for c in class_targets}
    monitors |= {f"val_{metric_key('mae', n)}" for n, k in zip(class_names, kinds) if k != "class"}
    roles = None if settings.task == "multiclass" else parcel_roles(chips, class_names)
    if roles is not None:
        monitors.add(PARCELS_MONITOR)
    monitor = settings.monitor
    if monitor == "auto":  # until the val areas are counted (parcel_monitor)
        monitor = PARCELS_MONITOR if roles is not None else "val_loss"
    if monitor not in monitors:
        raise ParameterError(
            f"cannot monitor {monitor!r}; choose auto or one of {', '.join(sorted(monitors))}"
        )
    precision = resolve_precision(settings.mixed_precision)
    return Plan(
        class_names, class_bands, weights, source, network, precision, kinds, settings.task,
        monitor=monitor, roles=roles, head_roles=head_roles,
    )  # fmt: skip


def _multiclass_outputs(chips: ChipsDirectory, settings: TrainSettings):
    """Mask bands, outputs (background first), their kinds and class weights of a multiclass
    run. Without ``--classes``, every class target of the chips (not regression targets)."""
    names = settings.classes or [n for n in chips.classes if chips.targets[n]["kind"] == "class"]
    class_bands = select_classes(chips, names)
    names = [chips.classes[b] for b in class_bands]
    check_multiclass_bands(chips, class_bands)
    if BACKGROUND in names:
        raise ParameterError(
            f"a class is named {BACKGROUND!r}, which `task` multiclass adds itself; rename it"
        )
    frequencies = chips.record.class_frequencies
    if len(names) == 1 and frequencies.get(names[0], 0.0) >= 1.0:
        raise ParameterError(
            f"`task` multiclass needs background pixels or a second class: every labelled "
            f"pixel of the chips is {names[0]}"
        )
    outputs = [BACKGROUND, *names]
    weights, source = resolve_multiclass_weights(settings.class_weights, outputs, frequencies)
    return class_bands, outputs, ["class"] * len(outputs), weights, source


def describe_plan(plan: Plan, settings: TrainSettings, chips: ChipsDirectory) -> str:
    """One line: targets, losses and weights, network, precision, chips per split."""
    weights = ", ".join(f"{n} {w:.3g}" for n, w in zip(plan.class_targets, plan.class_weights))
    counts = ", ".join(f"{len(chips.files[s])} {s}" for s in ("train", "val", "test"))
    regression = ""
    if plan.regression_targets:
        regression = f"; regression {', '.join(plan.regression_targets)} ({REGRESSION_LOSS})"
    network = f"U-Net depth {plan.network.depth}"
    if plan.network.encoder != UNET:
        network = f"{plan.network.encoder} encoder under a U-Net decoder"
    return (
        f"plan: {plan.task} classes {', '.join(plan.class_targets) or 'none'}{regression}; "
        f"loss {settings.loss}, class weights {weights or 'none'} ({plan.weights_source}); "
        f"{network}, base filters {plan.network.base_filters}; precision {plan.precision}; "
        f"on {plan.replicas}; chips {counts}; {settings.epochs} epochs of batch "
        f"{settings.batch_size}"
    )


def lower_is_better(monitor: str) -> bool:
    """Losses and errors (``val_mae_distance``) improve downwards, scores upwards."""
    return monitor.endswith("loss") or monitor.startswith(("val_mae_", "mae_"))


def parcel_monitor(
    chips: ChipsDirectory, plan: Plan, settings: TrainSettings
) -> tuple[Plan, ParcelMonitor | None]:
    """The per-epoch parcel score when the plan watches it. ``auto`` falls back to
    ``val_loss`` when the val areas hold fewer than :data:`MIN_MONITOR_PARCELS` true parcels."""
    if plan.monitor != PARCELS_MONITOR:
        return plan, None
    scoring = ParcelMonitor(chips, plan.roles, len(plan.class_names))
    logger.info("the val areas hold %d true parcels", scoring.parcels)
    if settings.monitor == "auto" and scoring.parcels < MIN_MONITOR_PARCELS:
        logger.info("monitor val_loss: fewer than %d parcels score noisily", MIN_MONITOR_PARCELS)
        return replace(plan, monitor="val_loss"), None
    return plan, scoring
