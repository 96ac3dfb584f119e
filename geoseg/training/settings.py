"""The settings of a training run, where it keeps its work, and what identifies it
for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from geoseg.contracts import TASKS, read_model_card
from geoseg.errors import InputFileError, Interrupted, OutputExistsError, ParameterError
from geoseg.io.outputs import check_output
from geoseg.models.config import UNET
from geoseg.models.encoders import HED, NAMED_WEIGHTS, check_hed_weights
from geoseg.training.dataset import ChipsDirectory
from geoseg.training.folds import AUTO_FOLDS
from geoseg.training.losses import LOSSES

HISTORY, SETTINGS, STATE = "history.csv", "settings.json", "state.json"
ENSEMBLE_RECORD = "folds.json"  # an ensemble's run (settings, chips), for --resume
ENCODER_RECORD = "encoder.json"  # how the encoder's weights were loaded, for the card
PARENT_RECORD = "parent.json"  # the model a fine-tuned run started from, for the card
BEST, LAST = "best.keras", "last.keras"
BEST_STAGING = "best.partial.keras"  # ModelCheckpoint writes here; renamed when complete
EpochReport = Callable[[int, int, dict], None]
Progress = Callable[[int, int], None]


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
    epoch_chips: int | str = "auto"
    """Chips an epoch draws at least: a smaller train split is passed over several times per
    epoch (reshuffled, new flips), so tiny sets get enough steps between validations; ``auto``:
    :data:`geoseg.training.fit.AUTO_EPOCH_CHIPS`; 0: one pass."""
    patience: int = 25
    """Epochs without improvement before stopping: small sets have short, noisy epochs, and
    10 stopped the Danish parcels before they fit (docs/benchmarks.md)."""
    monitor: str = "auto"
    """What picks the best epoch and stops early; ``auto``: the validation areas' parcels
    (``val_parcels_f1``, averaged over the last three epochs) for a model whose parcels can be
    delineated, when they hold at least ``MIN_MONITOR_PARCELS`` true parcels, else
    ``val_loss``."""
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
    init_from: str | None = None
    """A geoseg model directory whose weights the run starts from (fine-tuning); its network,
    bands and targets must match (:mod:`geoseg.training.parent`)."""
    init_member: int = 0
    """From an ensemble ``init_from``, the member that gives the weights (fold k: member k)."""

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
                "`freeze_encoder_epochs`" if self.freeze_encoder_epochs else "`encoder_weights`"
            )
            raise ParameterError(
                f"{option} needs a pretrained encoder (`encoder` vgg16, resnet50, ...); "
                "geoseg's own U-Net has no encoder weights"
            )
        if self.freeze_encoder_epochs < 0 or (self.devices is not None and self.devices < 1):
            raise ParameterError("`freeze_encoder_epochs` must be >= 0 and `devices` >= 1")
        if self.folds != AUTO_FOLDS and not (isinstance(self.folds, int) and self.folds >= 1):
            raise ParameterError(f"folds must be auto or at least 1, not {self.folds!r}")
        chips = self.epoch_chips
        if chips != "auto" and not (isinstance(chips, int) and chips >= 0):
            raise ParameterError(f"`epoch_chips` must be auto or at least 0, not {chips!r}")
        weights = self.encoder_weights
        if weights not in (None, *NAMED_WEIGHTS) and not Path(weights).is_file():
            raise InputFileError(f"`encoder_weights` {weights}: no such weights file")
        if weights == HED:
            check_hed_weights(self.encoder)
        if self.init_from is not None:
            read_model_card(self.init_from)  # one line when it is not a model folder
            if weights is not None:
                raise ParameterError(
                    "`init_from` and `encoder_weights` both give the starting weights: give one"
                )

    def to_json(self) -> dict:
        record = asdict(self)
        for key in ("class_weights", "classes"):
            if record[key] is not None and not isinstance(record[key], str):
                record[key] = list(record[key])
        return record


def partial_directory(out: str | Path) -> Path:
    """Where a run towards ``out`` keeps its checkpoints until it finishes."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.partial"


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
            f"an interrupted run towards {out} is in {work}: continue it with `resume` "
            "or start again with `overwrite`"
        )


def resumable_settings(work: Path, settings: TrainSettings, chips) -> tuple[TrainSettings, str]:
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
        raise ParameterError(f"`resume` needs the interrupted run's chips: {run['chips']}")
    if run.get("chips_content", chips_content(chips)) != chips_content(chips):
        raise ParameterError(
            f"`resume` needs the interrupted run's chips: {chips.root} was tiled again since "
            "(its dataset.json changed); start again with `overwrite`"
        )
    stored, given = run["settings"], settings.to_json()
    changed = [k for k in stored if k not in may_change and stored[k] != given.get(k)]
    if changed:
        key = changed[0]
        raise ParameterError(
            f"`resume` needs the interrupted run's settings: `{key}` was {stored[key]!r}, "
            f"now {given.get(key)!r}"
        )


def interrupted(out: Path) -> Interrupted:
    """What an interrupted run towards ``out`` kept: a run to resume, or nothing."""
    work = partial_directory(out)
    if (work / LAST).is_file() or (work / ENSEMBLE_RECORD).is_file():
        return Interrupted(
            f"interrupted; the run is kept in {work}: add `resume` to continue", True
        )
    return Interrupted("interrupted before the first epoch ended", False)
