"""Train the U-Net on a chips directory and write the model directory.

The run happens in a hidden sibling of the output (``.NAME.partial``) holding checkpoints and
logs; ``resume=True`` continues it from its last epoch. Only a finished run is moved to the
output, with ``model.keras``, ``geoseg.json``, ``history.csv``, ``training.png`` and ``logs/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from geoseg.contracts import (
    BACKGROUND,
    CARD_NAME,
    CARD_SCHEMA,
    DEFAULT_THRESHOLD,
    MODEL_NAME,
    TASKS,
    delineation_method,
    describe_delineation,
    role_names,
    write_model_card,
)
from geoseg.device import resolve_precision, training_strategy
from geoseg.errors import (
    GeosegError,
    InputFileError,
    OutputExistsError,
    ParameterError,
    TrainingError,
    first_line,
)
from geoseg.io.outputs import check_output, replace_with
from geoseg.metrics.scores import ConfusionMatrix, RegressionErrors, ScoreHistogram
from geoseg.models.config import UNET, UNetConfig
from geoseg.models.encoders import HED, NAMED_WEIGHTS, check_hed_weights
from geoseg.models.unet import build_model
from geoseg.training.dataset import (
    ChipsDirectory,
    check_multiclass_bands,
    make_dataset,
    select_classes,
)
from geoseg.training.folds import AUTO_FOLDS
from geoseg.training.losses import (
    CATEGORICAL_NAMES,
    LOSSES,
    REGRESSION_LOSS,
    WEIGHT_CAP,
    CategoricalSegmentationLoss,
    SegmentationLoss,
    channel_weights,
    metric_key,
    multiclass_metrics,
    resolve_class_weights,
    resolve_multiclass_weights,
    training_metrics,
)
from geoseg.training.parcel_areas import (
    MIN_MONITOR_PARCELS,
    PARCELS_MONITOR,
    ParcelMonitor,
    ParcelRoles,
    area_pieces,
    area_predictor,
    parcel_roles,
)
from geoseg.training.plots import plot_history
from geoseg.training.tuning import object_counts, predicted_samples, tune_delineation
from geoseg.version import __version__

HISTORY, SETTINGS, STATE = "history.csv", "settings.json", "state.json"
ENSEMBLE_RECORD = "folds.json"  # an ensemble's run (settings, chips), for --resume
ENCODER_RECORD = "encoder.json"  # how the encoder's weights were loaded, for the card
BEST, LAST = "best.keras", "last.keras"
BEST_STAGING = "best.partial.keras"  # ModelCheckpoint writes here; renamed when complete
TUNING_PIXELS = 2**20
"""Most validation pixels the delineation thresholds are tuned on (areas spread over them)."""

FIT_PIXELS = 2**19
"""Most training pixels the fit report (parcels of the training areas) is measured on."""
FITTED = 0.8
"""Object F1 on its own training areas below which a model is said to underfit."""
OVERFIT_GAP = 0.25
"""Object F1 on the training areas this far above the validation's: overfitting."""

MARKER_THRESHOLD = DEFAULT_THRESHOLD
"""The card's threshold of a regression target (``distance``): the marker level of parcel
delineation until it is tuned."""

UNFREEZE_LR_FACTOR = 0.1
"""After ``--freeze-encoder-epochs``, the whole network trains at this share of ``--lr``."""

EpochReport = Callable[[int, int, dict], None]
Progress = Callable[[int, int], None]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a training run (``geoseg train`` options of the same names)."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    base_filters: int = 32
    depth: int = 4
    dropout: float = 0.0
    loss: str = "bce_dice"
    class_weights: str | Sequence[float] = "auto"
    dice_weight: float = 1.0
    augment: bool = True
    jitter: float = 0.0
    epoch_chips: int = 0
    """Chips an epoch draws at least: a smaller train split is passed over several times per
    epoch (reshuffled, new flips), so tiny sets get enough steps between validations."""
    patience: int = 25
    """Epochs without improvement before stopping: small sets have short, noisy epochs, and
    10 stopped the Danish parcels before they fit (docs/benchmarks.md)."""
    monitor: str = "auto"
    """What picks the best epoch and stops early; ``auto``: the validation areas' parcels
    (``val_parcels_f1``) for a model whose parcels can be delineated, when they hold at least
    ``MIN_MONITOR_PARCELS`` true parcels, else ``val_loss``."""
    mixed_precision: str = "auto"
    seed: int = 0
    classes: Sequence[str] | None = None
    task: str = "multilabel"
    encoder: str = UNET
    encoder_weights: str | None = None
    """``imagenet`` (the default for a keras.applications encoder), ``none`` or a path."""
    freeze_encoder_epochs: int = 0
    folds: int | str = AUTO_FOLDS
    """With 2 or more, train one model per spatial fold and save their mean (an ensemble).
    ``auto``: an ensemble of 3 folds for a small set of parcel chips, one model otherwise
    (:func:`geoseg.training.folds.auto_folds`)."""
    devices: int | None = None
    """Replicas to train on (GPUs, else logical CPUs); default every GPU, else the CPU."""

    def check(self) -> None:
        for name in ("epochs", "batch_size", "base_filters", "depth"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name.replace('_', ' ')} must be at least 1")
        if not self.lr > 0:
            raise ParameterError(f"learning rate must be positive, not {self.lr}")
        if self.patience < 0 or not 0 <= self.jitter < 1:
            raise ParameterError("patience must be >= 0 and jitter in [0, 1)")
        if self.loss not in LOSSES:
            raise ParameterError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.task not in TASKS:
            raise ParameterError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.encoder == UNET and (self.freeze_encoder_epochs or self.encoder_weights):
            option = (
                "--freeze-encoder-epochs" if self.freeze_encoder_epochs else "--encoder-weights"
            )
            raise ParameterError(
                f"{option} needs a pretrained encoder (--encoder vgg16, resnet50, ...); "
                "geoseg's own U-Net has no encoder weights"
            )
        if self.freeze_encoder_epochs < 0 or (self.devices is not None and self.devices < 1):
            raise ParameterError("--freeze-encoder-epochs must be >= 0 and --devices >= 1")
        if self.folds != AUTO_FOLDS and not (isinstance(self.folds, int) and self.folds >= 1):
            raise ParameterError(f"folds must be auto or at least 1, not {self.folds!r}")
        weights = self.encoder_weights
        if weights not in (None, *NAMED_WEIGHTS) and not Path(weights).is_file():
            raise InputFileError(f"--encoder-weights {weights}: no such weights file")
        if weights == HED:
            check_hed_weights(self.encoder)

    def to_json(self) -> dict:
        record = asdict(self)
        for key in ("class_weights", "classes"):
            if record[key] is not None and not isinstance(record[key], str):
                record[key] = list(record[key])
        return record


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
            for record, how in ((tuned, ""), (tuned.get("tta"), " with --tta")):
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


def partial_directory(out: str | Path) -> Path:
    """Where a run towards ``out`` keeps its checkpoints until it finishes."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.partial"


def fit_model(chips_dir, out: Path, settings: TrainSettings, resume, overwrite, progress, on_epoch):
    """Train one model (``settings.folds`` is 1) and write it to ``out``, whose lock the caller
    holds; ``resume`` continues an interrupted run from its last epoch."""
    work = partial_directory(out)
    stored_precision = None
    if resume:
        settings, stored_precision = _resumable_settings(work, settings, chips_dir)
    plan = _plan(chips_dir, settings)
    strategy, replicas = training_strategy(settings.devices)
    if strategy.num_replicas_in_sync > settings.batch_size:
        raise ParameterError(
            f"--batch-size {settings.batch_size} is smaller than the {replicas} it is split over"
        )
    if resume:
        check_output(out, overwrite)
        plan = replace(plan, precision=stored_precision)
    else:
        _start_fresh(work, out, overwrite, settings, chips_dir, plan)
    plan = replace(plan, replicas=replicas)
    plan, scoring = _parcel_monitor(chips_dir, plan, settings)
    logger.info(_describe_plan(plan, settings, chips_dir))

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
        # A resumed run draws new orders and flips instead of replaying those of epoch 1.
        train_data = make_dataset(
            chips_dir, "train", settings.batch_size, plan.class_bands, training=True,
            augment_chips=settings.augment, jitter=settings.jitter,
            seed=settings.seed + 1000 * initial_epoch, task=plan.task,
            repeats=epoch_repeats(len(chips_dir.files["train"]), settings.epoch_chips),
        )  # fmt: skip
        val_data = make_dataset(
            chips_dir, "val", settings.batch_size, plan.class_bands, training=False, task=plan.task
        )
        test_data = None  # the test split is optional
        if chips_dir.files["test"]:
            test_data = make_dataset(
                chips_dir, "test", settings.batch_size, plan.class_bands, training=False,
                task=plan.task,
            )  # fmt: skip
        epoch = initial_epoch
        while epoch < settings.epochs:
            frozen = epoch < settings.freeze_encoder_epochs
            end = (
                min(settings.freeze_encoder_epochs, settings.epochs) if frozen else settings.epochs
            )
            with strategy.scope():
                _enter_phase(model, plan, settings, frozen)
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=end,
                initial_epoch=epoch,
                callbacks=_callbacks(
                    work,
                    plan,
                    scoring,
                    settings,
                    resume or epoch > initial_epoch,
                    progress,
                    on_epoch,
                ),  # fmt: skip
                shuffle=False,  # the dataset reshuffles itself
                verbose=0,
            )
            epoch, finite = _progress_so_far(work)
            if not (frozen and finite):  # an early stop of the frozen phase goes on unfrozen
                break
            _reset_patience(work)
        card = _finish(work, chips_dir, plan, settings, val_data, test_data)
    except tf.errors.OpError as exc:  # e.g. an unreadable chip, out of memory
        raise TrainingError(f"training failed: {first_line(exc)}") from None
    finally:
        keras.config.set_dtype_policy(previous_policy)
    for name in (BEST, LAST, STATE, SETTINGS, BEST_STAGING, ENCODER_RECORD):
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


def score_histogram(model, dataset, class_names: Sequence[str]) -> ScoreHistogram:
    """Predict every (image, mask) batch of ``dataset`` and count scores per class and level."""
    return validation_scores(model, dataset, class_names, ["class"] * len(class_names))[0]


def validation_scores(
    model, dataset, names: Sequence[str], kinds: Sequence[str]
) -> tuple[ScoreHistogram, RegressionErrors]:
    """Predict every (image, mask) batch of ``dataset``: score histograms of the class targets
    and errors of the regression targets (``kinds``: one per output channel)."""
    return pooled_validation_scores([(model, dataset)], names, kinds)


def pooled_validation_scores(
    pairs: Sequence[tuple], names: Sequence[str], kinds: Sequence[str]
) -> tuple[ScoreHistogram, RegressionErrors]:
    """:func:`validation_scores` summed over (model, dataset) pairs: each fold's val chips
    predicted by its own model."""
    classes = [i for i, k in enumerate(kinds) if k == "class"]
    regression = [i for i, k in enumerate(kinds) if k == "regression"]
    histogram = ScoreHistogram([names[i] for i in classes])
    errors = RegressionErrors([names[i] for i in regression])
    for model, dataset in pairs:
        for images, masks in dataset:
            predicted, masks = np.asarray(model(images, training=False)), np.asarray(masks)
            if classes:
                histogram.add(predicted[..., classes], masks[..., classes])
            if regression:
                errors.add(predicted[..., regression], masks[..., regression])
    return histogram, errors


@dataclass(frozen=True)
class _Plan:
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

    @property
    def class_targets(self) -> list[str]:
        return [n for n, k in zip(self.class_names, self.kinds) if k == "class"]

    @property
    def regression_targets(self) -> list[str]:
        return [n for n, k in zip(self.class_names, self.kinds) if k == "regression"]


def _plan(chips: ChipsDirectory, settings: TrainSettings) -> _Plan:
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
        fix = "use a smaller --depth or " if settings.encoder == UNET else ""
        raise ParameterError(
            f"chip size {chips.chip_size} is not divisible by {why} = {network.divisor}; "
            f"{fix}tile with another --size"
        )
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
    if monitor == "auto":  # until the val areas are counted (_parcel_monitor)
        monitor = PARCELS_MONITOR if roles is not None else "val_loss"
    if monitor not in monitors:
        raise ParameterError(
            f"cannot monitor {monitor!r}; choose auto or one of {', '.join(sorted(monitors))}"
        )
    precision = resolve_precision(settings.mixed_precision)
    return _Plan(
        class_names, class_bands, weights, source, network, precision, kinds, settings.task,
        monitor=monitor, roles=roles,
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
            f"a class is named {BACKGROUND!r}, which --task multiclass adds itself; rename it"
        )
    frequencies = chips.record.class_frequencies
    if len(names) == 1 and frequencies.get(names[0], 0.0) >= 1.0:
        raise ParameterError(
            f"--task multiclass needs background pixels or a second class: every labelled "
            f"pixel of the chips is {names[0]}"
        )
    outputs = [BACKGROUND, *names]
    weights, source = resolve_multiclass_weights(settings.class_weights, outputs, frequencies)
    return class_bands, outputs, ["class"] * len(outputs), weights, source


def _describe_plan(plan: _Plan, settings: TrainSettings, chips: ChipsDirectory) -> str:
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


def _start_fresh(
    work: Path, out: Path, overwrite: bool, settings: TrainSettings, chips, plan
) -> None:
    """Refuse to clobber a finished model or a resumable run unless ``overwrite``."""
    check_fresh_start(work, out, overwrite)
    shutil.rmtree(work, ignore_errors=True)  # also a run stopped before its first epoch
    work.mkdir(parents=True)
    run = {**run_record(settings, chips), "precision": plan.precision}
    (work / SETTINGS).write_text(json.dumps(run, indent=2))


def chips_content(chips: ChipsDirectory) -> str:
    """A fingerprint of what a chips directory holds: the hash of its dataset.json (classes,
    bands, normalisation, chip lists), which a new tiling rewrites."""
    return hashlib.sha256((chips.root / "dataset.json").read_bytes()).hexdigest()


def check_fresh_start(work: Path, out: Path, overwrite: bool) -> None:
    """Refuse a finished model at ``out`` or an interrupted run in ``work`` unless
    ``overwrite``."""
    check_output(out, overwrite)
    if ((work / LAST).is_file() or (work / ENSEMBLE_RECORD).is_file()) and not overwrite:
        raise OutputExistsError(
            f"an interrupted run towards {out} is in {work}: continue it with --resume "
            "or start again with --overwrite"
        )


def _resumable_settings(work: Path, settings: TrainSettings, chips) -> tuple[TrainSettings, str]:
    """The interrupted run's settings and precision; only ``epochs`` may change on resume."""
    if not all((work / name).is_file() for name in (SETTINGS, LAST, STATE)):
        raise ParameterError(f"nothing to resume: no interrupted run in {work}")
    run = json.loads((work / SETTINGS).read_text())
    check_same_run(run, settings, chips, may_change=("epochs",))
    settings = replace(settings, **{k: v for k, v in run["settings"].items() if k != "epochs"})
    return settings, run["precision"]


def run_record(settings: TrainSettings, chips: ChipsDirectory) -> dict:
    """What identifies a run for ``--resume``: its settings and chips (path and content)."""
    return {
        "settings": settings.to_json(),
        "chips": str(chips.root),
        "chips_content": chips_content(chips),
    }


def check_same_run(run: dict, settings: TrainSettings, chips, may_change=()) -> None:
    """Refuse to resume ``run`` (a :func:`run_record`) with other chips or settings."""
    if run["chips"] != str(chips.root):
        raise ParameterError(f"--resume needs the interrupted run's chips: {run['chips']}")
    if run.get("chips_content", chips_content(chips)) != chips_content(chips):
        raise ParameterError(
            f"--resume needs the interrupted run's chips: {chips.root} was tiled again since "
            "(its dataset.json changed); start again with --overwrite"
        )
    stored, given = run["settings"], settings.to_json()
    changed = [k for k in stored if k not in may_change and stored[k] != given.get(k)]
    if changed:
        key = changed[0]
        raise ParameterError(
            f"--resume needs the interrupted run's settings: {key} was {stored[key]!r}, "
            f"now {given.get(key)!r}"
        )


def _model(work: Path, plan: _Plan, settings: TrainSettings, resume: bool):
    """A compiled model and the epoch to start from (the last checkpoint's when resuming)."""
    if resume:
        state = json.loads((work / STATE).read_text())
        history = pd.read_csv(work / HISTORY).iloc[: state["epoch"]]
        history.to_csv(work / HISTORY, index=False)
        logger.info("resuming %s after epoch %d", work, state["epoch"])
        return keras.models.load_model(work / LAST), state["epoch"]
    model = build_model(plan.network)
    if plan.network.encoder != UNET:
        from geoseg.models.encoders import load_encoder_weights

        record = load_encoder_weights(model, plan.network, settings.encoder_weights or "imagenet")
        (work / ENCODER_RECORD).write_text(json.dumps(record))
    _compile(model, plan, settings, settings.lr)
    return model, 0


def _compile(model, plan: _Plan, settings: TrainSettings, lr: float) -> None:
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


def _enter_phase(model, plan: _Plan, settings: TrainSettings, frozen: bool) -> None:
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


def _progress_so_far(work: Path) -> tuple[int, bool]:
    """Epochs completed, and whether the loss stayed finite."""
    epoch = json.loads((work / STATE).read_text())["epoch"]
    return epoch, bool(np.isfinite(pd.read_csv(work / HISTORY)["loss"]).all())


def _reset_patience(work: Path) -> None:
    """Early stopping and the plateau schedule start counting again (a new phase)."""
    state = json.loads((work / STATE).read_text())
    for name in ("stopping", "plateau"):
        state[name]["wait"] = 0.0
    (work / STATE).write_text(json.dumps(state))


class _ResumePoint(keras.callbacks.Callback):
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


class _StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite (quietly, unlike TerminateOnNaN)."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and not np.isfinite(float(logs.get("loss", 0.0))):
            self.model.stop_training = True


class _Report(keras.callbacks.Callback):
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


def epoch_repeats(train_chips: int, epoch_chips: int) -> int:
    """Passes over ``train_chips`` chips that draw at least ``epoch_chips`` in one epoch."""
    return max(1, -(-epoch_chips // max(train_chips, 1)))


def _lower_is_better(monitor: str) -> bool:
    """Losses and errors (``val_mae_distance``) improve downwards, scores upwards."""
    return monitor.endswith("loss") or monitor.startswith(("val_mae_", "mae_"))


def _parcel_monitor(
    chips: ChipsDirectory, plan: _Plan, settings: TrainSettings
) -> tuple[_Plan, ParcelMonitor | None]:
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


def _callbacks(work, plan: _Plan, scoring, settings, resume, progress, on_epoch) -> list:
    mode = "min" if _lower_is_better(plan.monitor) else "max"
    watch = dict(monitor=plan.monitor, mode=mode)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(work / BEST_STAGING), save_best_only=True, **watch
    )
    stopping = keras.callbacks.EarlyStopping(patience=settings.patience, **watch)
    plateau = keras.callbacks.ReduceLROnPlateau(
        factor=0.5, patience=max(1, settings.patience // 2), min_lr=settings.lr / 100, **watch
    )
    return [
        _StopOnNaN(),
        *([scoring] if scoring else []),  # before every callback that reads the monitored value
        checkpoint,  # before _ResumePoint, which promotes what it wrote this epoch
        stopping,
        plateau,
        keras.callbacks.CSVLogger(str(work / HISTORY), append=resume),
        keras.callbacks.TensorBoard(str(work / "logs"), write_graph=False, profile_batch=0),
        _ResumePoint(
            work, {"checkpoint": checkpoint, "stopping": stopping, "plateau": plateau}, resume
        ),
        _Report(progress, on_epoch),
    ]


def _finish(
    work: Path, chips: ChipsDirectory, plan: _Plan, settings, val_data, test_data=None
) -> dict:
    """Pick thresholds on val with the best checkpoint; write model, card and plot.

    Test chips, when there are any, are scored at the val thresholds (an unbiased estimate).
    """
    history = pd.read_csv(work / HISTORY)
    monitored = history[plan.monitor].where(np.isfinite(history["loss"]))
    if not (work / BEST).is_file() or not np.isfinite(monitored).any():
        shutil.rmtree(work)
        raise TrainingError(
            f"training diverged (the loss became NaN or infinite); try a lower --lr than "
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
    best_row = history.iloc[_best_epoch(work, history, plan.monitor) - 1]
    card = _model_card(chips, plan, settings, thresholds, scores, best_row, history)
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


def multilabel_scores(plan: _Plan, val: Sequence[tuple], test: tuple | None) -> tuple[dict, dict]:
    """Thresholds tuned for F1 on val; scores per target on val (and test at them). ``val``
    holds (model, dataset) pairs, pooled; ``test`` one pair or None."""
    val = pooled_validation_scores(val, plan.class_names, plan.kinds)  # the model as saved
    tuned = val[0].best_thresholds()
    thresholds = {n: tuned.get(n, MARKER_THRESHOLD) for n in plan.class_names}
    scores = {"val": _scores(plan, val, thresholds)}
    logger.info("thresholds chosen on val: %s", _describe_scores(thresholds, scores["val"]))
    if test is not None:
        test = validation_scores(*test, plan.class_names, plan.kinds)
        scores["test"] = _scores(plan, test, thresholds)
        logger.info("test scores at them: %s", _describe_scores(thresholds, scores["test"]))
    return thresholds, scores


def confusion_matrix(model, dataset, names: Sequence[str]) -> ConfusionMatrix:
    """Pixels of every (image, one-hot target) batch of ``dataset`` by true and likeliest class."""
    return pooled_confusion_matrix([(model, dataset)], names)


def pooled_confusion_matrix(pairs: Sequence[tuple], names: Sequence[str]) -> ConfusionMatrix:
    """:func:`confusion_matrix` summed over (model, dataset) pairs."""
    matrix = ConfusionMatrix(names)
    for model, dataset in pairs:
        for images, targets in dataset:
            predicted = np.argmax(np.asarray(model(images, training=False)), axis=-1)
            targets = np.asarray(targets)
            truth = np.where(targets[..., 0] <= 1.0, np.argmax(targets, axis=-1), 255)
            matrix.add(truth, predicted)
    return matrix


def multiclass_scores(plan: _Plan, val: Sequence[tuple], test: tuple | None) -> dict:
    """Per class IoU, F1, precision, recall of the likeliest class on val (and test), and mean
    IoU of the foreground classes as ``{split}_mean_iou``; ``val`` and ``test`` as for
    :func:`multilabel_scores`."""
    scores = {}
    for split, pairs in (("val", val), ("test", [test] if test else None)):
        if pairs is None:
            continue
        found = pooled_confusion_matrix(pairs, plan.class_names).to_json()
        scores[split] = found["per_class"]
        scores[f"{split}_mean_iou"] = found["mean_iou"]
        scores[f"{split}_confusion"] = found["matrix"]
        logger.info(
            "%s: mean IoU %.3f; %s",
            split,
            found["mean_iou"],
            _describe_scores({}, found["per_class"]),
        )
    return scores


def tune_parcels(pairs: Sequence[tuple], plan: _Plan, thresholds: dict) -> dict | None:
    """Parcel thresholds tuned for object F1 on the val chips stitched into areas, when parcels
    can be delineated: once for plain prediction and once (``tta``) for ``predict --tta``.
    ``pairs`` holds (model, chips) pairs: the val areas of each chips view are predicted by its
    model and pooled."""
    chips, roles = pairs[0][1], plan.roles
    if roles is None:
        return None
    classes = len(plan.class_names)

    def areas_of(split: str, pixels: int) -> tuple[list, list]:
        """The pieces of ``split`` of every view and the model that predicts each."""
        pieces, models = [], []
        for model, view in pairs:
            found = area_pieces(view, split, pixels / len(pairs))
            pieces += found
            models += [model] * len(found)
        return pieces, models

    def predictors(models, tta: bool = False) -> list:
        return [area_predictor(m, chips.chip_size, classes, tta) for m in models]

    start = {key: thresholds.get(roles.names.get(key), 0.5) for key in ("extent", "boundary")}
    start["marker"] = thresholds.get(roles.names.get("distance"), MARKER_THRESHOLD)
    pieces, models = areas_of("val", TUNING_PIXELS)
    record = tune_delineation(predictors(models), pieces, roles.outputs, roles.truth_bands, start)
    if record is not None:
        with_tta = predictors(models, tta=True)
        with_tta = tune_delineation(with_tta, pieces, roles.outputs, roles.truth_bands, start)
        record["tta"] = {k: with_tta[k] for k in ("thresholds", "val_objects")}
        record["val_areas"] = {"areas": len(pieces), "pixels": sum(p[1].size for p in pieces)}
        fit_pieces, fit_models = areas_of("train", FIT_PIXELS)
        if fit_pieces:
            samples = predicted_samples(
                predictors(fit_models), fit_pieces, roles.outputs, roles.truth_bands
            )
            record["fit_objects"] = object_counts(samples, record["thresholds"])
            pixels = sum(p[1].size for p in fit_pieces)
            record["fit_areas"] = {"areas": len(fit_pieces), "pixels": pixels}
            logger.info(
                "fit: parcels on %d train areas F1 %.3f, on the val areas %.3f",
                len(fit_pieces), record["fit_objects"]["f1"], record["val_objects"]["f1"],
            )  # fmt: skip
    return record


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


def _scores(plan: _Plan, measured: tuple, thresholds: dict) -> dict:
    """Per target in output order: IoU, F1, precision, recall (classes) or MAE, RMSE."""
    histogram, errors = measured
    found = {**histogram.scores(thresholds), **errors.scores()}
    return {name: found[name] for name in plan.class_names}


def _best_epoch(work: Path, history: pd.DataFrame, monitor: str) -> int:
    """The epoch (1-based) whose weights are in best.keras."""
    best_epoch = json.loads((work / STATE).read_text()).get("best_epoch", 0)
    if best_epoch:
        return best_epoch
    column = history[monitor]  # a run resumed from a state without best_epoch
    return int(column.idxmin() if _lower_is_better(monitor) else column.idxmax()) + 1


def _describe_scores(thresholds: dict, scores: dict) -> str:
    """Per target: threshold, F1 and IoU (classes) or MAE (regression), for the log."""

    def describe(name, score):
        if "mae" in score:
            return f"{name} (MAE {score['mae']:.3f})"
        at = f" {thresholds[name]:.3f}" if name in thresholds else ""
        return f"{name}{at} (F1 {score['f1']:.3f}, IoU {score['iou']:.3f})"

    return ", ".join(describe(n, s) for n, s in scores.items())


def _model_card(chips, plan, settings, thresholds, scores, best_row, history) -> dict:
    import tensorflow as tf

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
