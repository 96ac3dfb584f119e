"""The shape of a geoseg network, as its model card records it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from geoseg.contracts import TASKS
from geoseg.errors import ParameterError

ENCODER_DIVISOR = 32
UNET = "unet"
"""The encoder name of geoseg's own BatchNorm U-Net; other names are keras.applications
encoders (:mod:`geoseg.models.encoders`)."""


def head_key(name: str) -> str:
    """A target name made safe for layer and metric names, e.g. ``head_{key}``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the network: input bands, output classes, levels and width.

    ``heads`` names the targets (one output channel each, in order); with more than one, each
    target gets its own 1x1 sigmoid head ``head_{name}``. Without names (models written before
    heads existed) one 1x1 convolution gives every channel. With ``task`` ``multiclass`` the
    outputs are one softmax (``heads`` then starts with :data:`BACKGROUND`). ``encoder`` is
    :data:`UNET` or a keras.applications encoder under the same decoder. With ``members`` > 1
    the network is that many such U-Nets (``fold0``, ``fold1``, ...) whose outputs are averaged:
    the ensemble that ``train --folds`` writes.
    """

    bands: int
    classes: int
    depth: int = 4
    base_filters: int = 32
    dropout: float = 0.0
    heads: tuple[str, ...] = ()
    task: str = "multilabel"
    encoder: str = UNET
    members: int = 1

    def __post_init__(self):
        object.__setattr__(self, "heads", tuple(str(h) for h in self.heads or ()))
        if self.bands < 1 or self.classes < 1:
            raise ParameterError("a U-Net needs at least one input band and one class")
        if self.task not in TASKS:
            raise ParameterError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "multiclass" and self.classes < 2:
            raise ParameterError("a multiclass model needs background and at least one class")
        if self.heads and len(self.heads) != self.classes:
            raise ParameterError(f"{len(self.heads)} head names for {self.classes} outputs")
        keys = [head_key(h) for h in self.heads]
        if len(set(keys)) != len(keys):
            raise ParameterError(f"head names {', '.join(self.heads)} are too alike; rename one")
        if not 1 <= self.depth <= 8:
            raise ParameterError(f"depth must be between 1 and 8, not {self.depth}")
        if self.base_filters < 1:
            raise ParameterError(f"base filters must be at least 1, not {self.base_filters}")
        if not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.members < 1:
            raise ParameterError(f"an ensemble needs at least one member, not {self.members}")

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this (32 under a keras.applications
        encoder, which halves the resolution five times)."""
        return 2**self.depth if self.encoder == UNET else ENCODER_DIVISOR

    def to_dict(self) -> dict:
        record = asdict(self)
        record["heads"] = list(self.heads)
        return record


def config_from_record(record: dict) -> UNetConfig:
    """The config of a model card's ``model`` record (older cards lack task and encoder)."""
    fields = {f for f in UNetConfig.__dataclass_fields__}
    return UNetConfig(**{k: v for k, v in record.items() if k in fields})
