"""The file contracts between geoseg's commands, each read and written in one place.

- ``dataset.json`` of a chips folder (``geoseg tile`` -> ``train``): :class:`DatasetRecord`;
- ``geoseg.json``, the model card (``geoseg train`` -> ``predict``): :class:`ModelCard`;
- the prediction's GeoTIFF tags (``geoseg predict`` -> ``vectorize``, ``evaluate``,
  ``quicklook``): :class:`PredictionTags`.

Each carries a schema version. The records are read-only mappings over their JSON (so
``card["classes"]`` works) with typed properties for what the commands use; a file that does
not fit its contract gets one clear error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geoseg.errors import InputFileError, NotAPredictionError

DATASET_NAME = "dataset.json"
DATASET_SCHEMA = 1
CARD_NAME = "geoseg.json"
MODEL_NAME = "model.keras"
CARD_SCHEMA = 1
PREDICTION_SCHEMA = 1
DEFAULT_THRESHOLD = 0.5
TASKS = ("multilabel", "multiclass")
BACKGROUND = "background"
"""The first class of a multiclass model and code 0 of its class map."""
CLASS_MAP_NODATA = 255


def write_json(path: str | os.PathLike, record: Mapping) -> None:
    """Write strict JSON (no NaN or infinity, which other tools cannot read)."""
    Path(path).write_text(json.dumps(dict(record), indent=2, allow_nan=False) + "\n")


class _Record(Mapping):
    """A JSON object read from ``path``, checked for its required keys and schema version."""

    REQUIRED: tuple[str, ...] = ()
    SCHEMA = 1
    KIND = "record"

    def __init__(self, record: dict, path: str | os.PathLike | None = None):
        self._record, self.path = record, path
        self._check()

    def _fail(self, reason: str):
        return InputFileError(f"{self.path or self.KIND}: not a geoseg {self.KIND} ({reason})")

    def _check(self) -> None:
        if not isinstance(self._record, dict):
            raise self._fail("not a JSON object")
        missing = [key for key in self.REQUIRED if key not in self._record]
        if missing:
            raise self._fail(f"missing {', '.join(missing)}")
        version = self._record.get("schema_version", 1)
        if not isinstance(version, int) or version > self.SCHEMA:
            raise self._fail(f"schema version {version!r}; this geoseg reads up to {self.SCHEMA}")

    @classmethod
    def load(cls, path: str | os.PathLike):
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{path}: not valid JSON ({exc})") from None
        return cls(record, path)

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self._record)

    def __getitem__(self, key: str) -> Any:
        return self._record[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path or ''})"


TARGET_KINDS = ("class", "regression")
ROLES = ("extent", "boundary", "distance")
DISTANCE_SCALE = 254
IGNORE = 255
"""The mask value of pixels that count in no loss and no score (outside the image, nodata)."""
"""A regression target such as ``distance`` is stored in masks as round(value * 254), 0..254."""


def default_targets(names) -> dict[str, dict]:
    """The targets of a file written before targets were recorded: classes; ``boundary``'s role."""
    return {n: {"kind": "class", "role": "boundary" if n == "boundary" else None} for n in names}


def check_targets(targets: Mapping, names, fail) -> dict[str, dict]:
    """``targets`` for every name in ``names``, with a known kind and role each."""
    if set(targets) != set(names):
        raise fail("targets do not match the classes")
    for name, target in targets.items():
        if target.get("kind") not in TARGET_KINDS or target.get("role") not in (None, *ROLES):
            raise fail(f"target {name!r} has an unknown kind or role")
    return {name: dict(targets[name]) for name in names}


def role_names(targets: Mapping) -> dict[str, str]:
    """Role -> target name, e.g. {"extent": "parcels", "boundary": "boundary"}."""
    return {t["role"]: name for name, t in targets.items() if t.get("role")}


WATERSHED, CLOSING = "watershed", "closing"
"""The two parcel delineations: a watershed of the field extent (with its boundary and
distance when there are), or the areas the boundary closes (a boundary alone)."""


def delineation_method(roles: Mapping) -> str | None:
    """How parcels are delineated from targets with these roles; None when they cannot be."""
    if "extent" in roles:
        return WATERSHED
    return CLOSING if "boundary" in roles else None


@dataclass(frozen=True)
class Delineation:
    """The thresholds that turn extent, boundary and distance probabilities into parcels (0..1).

    ``extent``: field pixels; ``boundary``: boundary pixels, which markers avoid and the
    watershed does not cross; ``marker``: the distance (or its stand-in) a marker reaches;
    ``parcel``: the mean extent probability a parcel keeps (0: every parcel); ``merge``: the
    boundary level below which parcels meeting on quiet pixels join (0: no merge); ``split``:
    how far the elevation must drop between two peaks of one marker for them to grow as two
    parcels (0: markers are not split); ``join``: the mean boundary probability along the whole
    border of two neighbouring parcels below which they are one (0: no join). The model card and
    the prediction's tags store the tuned ones as a JSON object of these keys (:meth:`to_dict`,
    :meth:`from_mapping`; a record without ``split`` or ``join``, from an earlier version, has
    them off).
    """

    extent: float = 0.5
    boundary: float = 0.5
    marker: float = 0.5
    parcel: float = 0.0
    merge: float = 0.0
    split: float = 0.0
    join: float = 0.0

    KEYS = ("extent", "boundary", "marker", "parcel", "merge", "split", "join")

    @classmethod
    def from_mapping(cls, record: Mapping | None, base: Delineation | None = None) -> Delineation:
        """The thresholds ``record`` holds (a card's or tags' JSON object), the others from
        ``base`` (default: :class:`Delineation`'s own); unknown keys are refused."""
        record = dict(record or {})
        unknown = sorted(set(record) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown delineation threshold {unknown[0]!r}")
        base = base or cls()
        return cls(**{k: float(record.get(k, getattr(base, k))) for k in cls.KEYS})

    def to_dict(self, keys=KEYS) -> dict[str, float]:
        """The thresholds of ``keys`` as a JSON object."""
        return {k: getattr(self, k) for k in keys}

    def replace(self, **changes: float) -> Delineation:
        return replace(self, **{k: float(v) for k, v in changes.items()})

    def distance(self, other: Delineation, keys=KEYS) -> float:
        """How far ``other`` lies from these thresholds over ``keys`` (ties go to the nearest)."""
        return sum(abs(getattr(self, k) - getattr(other, k)) for k in keys)


CLOSING_NOTE = (
    "parcels by closing the boundary alone, which breaks fields into pieces "
    "(no field extent: label parcels as polygons of one class to get one)"
)


def describe_delineation(roles: Mapping) -> str:
    """Which parcel delineation targets with these roles give, and why, in one phrase."""
    method = delineation_method(roles)
    if method == WATERSHED:
        used = ", ".join(role for role in ROLES if role in roles)
        return f"parcels by a watershed of the field extent ({used})"
    if method == CLOSING:
        return CLOSING_NOTE
    return "no parcels (no field extent or boundary target)"


class _ChipContract(_Record):
    """What chips folders and models share: classes (every target, in band order), chip size,
    bands, and each target's kind (``class`` 0/1 or ``regression`` 0..1) and role."""

    @property
    def targets(self) -> dict[str, dict]:
        """Name -> {"kind": "class" | "regression", "role": "extent" | "boundary" | ...}."""
        if "targets" not in self:
            return default_targets(self.classes)
        return check_targets(self["targets"], self.classes, self._fail)

    @property
    def roles(self) -> dict[str, str]:
        return role_names(self.targets)

    @property
    def classes(self) -> list[str]:
        return list(self["classes"])

    @property
    def chip_size(self) -> int:
        return int(self["chip_size"])

    @property
    def band_count(self) -> int:
        return int(self["bands"]["count"])


class DatasetRecord(_ChipContract):
    """``dataset.json``: chip size, bands and their normalisation, classes and their pixel
    frequencies, sampling settings, counts and source scenes of a chips folder."""

    REQUIRED = ("chip_size", "classes", "bands", "normalization")
    SCHEMA = DATASET_SCHEMA
    KIND = "dataset.json"

    def _check(self) -> None:
        super()._check()
        if not isinstance(self["classes"], list) or not isinstance(self["bands"], dict):
            raise self._fail("classes must be a list and bands an object")
        if "count" not in self["bands"] or "bands" not in self["normalization"]:
            raise self._fail("bands without a count or normalisation without bands")

    @classmethod
    def read(cls, root: str | os.PathLike) -> DatasetRecord:
        """The record of the chips folder ``root``."""
        return cls.load(Path(root) / DATASET_NAME)

    @property
    def class_frequencies(self) -> dict[str, float]:
        return dict(self.get("class_frequencies", {}))


class ModelCard(_ChipContract):
    """``geoseg.json`` next to ``model.keras``: the contract a model was trained under (bands,
    normalisation, chip size, classes, class weights, thresholds) and how it was trained."""

    REQUIRED = ("classes", "bands", "chip_size", "normalization", "class_weights", "threshold")
    SCHEMA = CARD_SCHEMA
    KIND = "model card"

    def _check(self) -> None:
        super()._check()
        if self.get("task", "multilabel") not in TASKS:
            raise self._fail(f"unknown task {self['task']!r}")
        if self.task == "multiclass":
            if not self["classes"] or self["classes"][0] != BACKGROUND or self["threshold"]:
                raise self._fail("a multiclass model starts with background and has no thresholds")
        elif set(self["threshold"]) != set(self["classes"]):
            raise self._fail("thresholds do not match the classes")

    @property
    def task(self) -> str:
        """``multilabel`` (a sigmoid per target) or ``multiclass`` (one softmax)."""
        return str(self.get("task", "multilabel"))

    @classmethod
    def read(cls, model_dir: str | os.PathLike) -> ModelCard:
        """The card of a model folder written by ``geoseg train``."""
        model_dir = Path(model_dir)
        if not (model_dir / MODEL_NAME).is_file() or not (model_dir / CARD_NAME).is_file():
            raise InputFileError(
                f"{model_dir} is not a geoseg model directory (needs {MODEL_NAME} and {CARD_NAME})"
            )
        return cls.load(model_dir / CARD_NAME)

    @property
    def thresholds(self) -> dict[str, float]:
        """Per class target; empty for a multiclass model (its pixels take the likeliest class)."""
        return {name: float(value) for name, value in self["threshold"].items()}


def read_model_card(model_dir: str | os.PathLike) -> ModelCard:
    """Read and check the card of a model directory written by ``geoseg train``."""
    return ModelCard.read(model_dir)


def write_model_card(path: str | os.PathLike, card: Mapping) -> None:
    """Check ``card`` against the contract and write it as strict JSON to ``path``."""
    ModelCard(dict(card), path).write(path)


@dataclass(frozen=True)
class PredictionTags:
    """What ``geoseg predict`` records in its GeoTIFF: classes (one per band), thresholds, model."""

    classes: tuple[str, ...]
    thresholds: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    schema_version: int = PREDICTION_SCHEMA
    targets: dict[str, dict] = field(default_factory=dict)
    """Name -> kind and role, as in the model card (default: classes, ``boundary``'s role)."""
    delineation: dict[str, float] = field(default_factory=dict)
    """Thresholds of the parcel delineation tuned with the model, if any."""
    task: str = "multilabel"
    """``multiclass``: the bands are one softmax, background first (no thresholds apply)."""

    def __post_init__(self):
        if not self.targets:
            object.__setattr__(self, "targets", default_targets(self.classes))

    @property
    def roles(self) -> dict[str, str]:
        return role_names(self.targets)

    def to_tags(self) -> dict[str, str]:
        """GDAL metadata items (strings) for ``dataset.update_tags``."""
        tags = {
            "geoseg_schema": str(self.schema_version),
            "geoseg_classes": json.dumps(list(self.classes)),
            "geoseg_thresholds": json.dumps(self.thresholds),
            "geoseg_targets": json.dumps(self.targets),
        }
        if self.delineation:
            tags["geoseg_delineation"] = json.dumps(self.delineation)
        if self.task != "multilabel":
            tags["geoseg_task"] = self.task
        if self.model is not None:
            tags["geoseg_model"] = self.model
        return tags

    @classmethod
    def from_tags(cls, tags: dict, descriptions, source: str | os.PathLike) -> PredictionTags:
        """Parse tags and band descriptions; refuse a raster that ``predict`` did not write."""
        if CLASS_MAP_TAG in tags:
            raise NotAPredictionError(
                f"{source}: a geoseg class map, not a probability raster; give the "
                "probabilities written by geoseg predict -o"
            )
        if "geoseg_classes" not in tags:
            raise NotAPredictionError(
                f"{source}: not a geoseg prediction (no geoseg tags); give a probability GeoTIFF "
                "written by geoseg predict"
            )
        try:
            classes = tuple(str(name) for name in json.loads(tags["geoseg_classes"]))
            stored = json.loads(tags.get("geoseg_thresholds", "{}"))
            thresholds = {name: float(stored.get(name, DEFAULT_THRESHOLD)) for name in classes}
            version = int(tags.get("geoseg_schema", PREDICTION_SCHEMA))
            targets = json.loads(tags.get("geoseg_targets", "{}")) or default_targets(classes)
            delineation = {
                k: float(v) for k, v in json.loads(tags.get("geoseg_delineation", "{}")).items()
            }
            Delineation.from_mapping(delineation)  # its keys are thresholds geoseg knows
            task = str(tags.get("geoseg_task", "multilabel"))
        except (ValueError, TypeError, AttributeError) as exc:
            raise NotAPredictionError(f"{source}: damaged geoseg tags ({exc})") from None

        def fail(reason):
            return NotAPredictionError(f"{source}: damaged geoseg tags ({reason})")

        targets = check_targets(targets, classes, fail)
        if task not in TASKS:
            raise fail(f"unknown task {task!r}")
        if len(classes) != len(descriptions):
            raise NotAPredictionError(
                f"{source}: geoseg tags name {len(classes)} classes for {len(descriptions)} bands"
            )
        if version > PREDICTION_SCHEMA:
            raise NotAPredictionError(
                f"{source}: written by a newer geoseg (prediction schema {version})"
            )
        return cls(
            classes, thresholds, tags.get("geoseg_model"), version, targets, delineation, task
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> PredictionTags:
        """The tags of the prediction GeoTIFF at ``path``."""
        import rasterio

        with rasterio.open(path) as src:
            return cls.from_tags(src.tags(), src.descriptions, path)


CLASS_MAP_TAG = "geoseg_class_map"


CLASS_COLUMN = "class"
"""The column of a polygon file that names each polygon's class (``parcel`` in parcels mode)."""


@dataclass(frozen=True)
class PolygonMetadata:
    """What ``vectorize`` records in its polygon file's layer metadata: the raster it read,
    that raster's bounds (what was predicted: truth beyond it is left out of a score) and, in
    parcels mode, the delineation that ran (``watershed`` or ``closing``)."""

    source: str
    extent: tuple[float, float, float, float]
    delineation: str | None = None

    def to_metadata(self) -> dict[str, str]:
        metadata = {"geoseg_source": self.source, "geoseg_extent": json.dumps(list(self.extent))}
        if self.delineation:
            metadata["geoseg_delineation"] = self.delineation
        return metadata

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> PolygonMetadata | None:
        """The record of a polygon file's metadata; None for a file geoseg did not write."""
        if "geoseg_extent" not in metadata:
            return None
        extent = tuple(float(v) for v in json.loads(metadata["geoseg_extent"]))
        return cls(metadata.get("geoseg_source", ""), extent, metadata.get("geoseg_delineation"))


@dataclass(frozen=True)
class ClassMapTags:
    """What ``geoseg predict --class-map`` records in its uint8 class map: the class names, code
    0 (:data:`BACKGROUND`) to N in order, and :data:`CLASS_MAP_NODATA` as nodata."""

    classes: tuple[str, ...]
    model: str | None = None
    schema_version: int = PREDICTION_SCHEMA

    def to_tags(self) -> dict[str, str]:
        tags = {
            "geoseg_schema": str(self.schema_version),
            CLASS_MAP_TAG: json.dumps(list(self.classes)),
        }
        if self.model is not None:
            tags["geoseg_model"] = self.model
        return tags

    @classmethod
    def from_tags(cls, tags: dict, source: str | os.PathLike) -> ClassMapTags:
        """Parse the tags; refuse a raster that is not a geoseg class map."""
        if CLASS_MAP_TAG not in tags:
            raise NotAPredictionError(
                f"{source}: not a geoseg class map (no {CLASS_MAP_TAG} tag); write one with "
                "geoseg predict `class_map`"
            )
        try:
            classes = tuple(str(name) for name in json.loads(tags[CLASS_MAP_TAG]))
            version = int(tags.get("geoseg_schema", PREDICTION_SCHEMA))
        except (ValueError, TypeError) as exc:
            raise NotAPredictionError(f"{source}: damaged geoseg tags ({exc})") from None
        if not classes or version > PREDICTION_SCHEMA:
            raise NotAPredictionError(f"{source}: damaged or newer geoseg class map tags")
        return cls(classes, tags.get("geoseg_model"), version)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ClassMapTags:
        import rasterio

        with rasterio.open(path) as src:
            return cls.from_tags(src.tags(), path)


def is_class_map(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a raster with geoseg class map tags."""
    import rasterio

    with rasterio.open(path) as src:
        return CLASS_MAP_TAG in src.tags()
