"""The file contracts between geoseg's commands, each read and written in one place.

- the prediction's GeoTIFF tags (``geoseg predict`` -> ``vectorize``, ``evaluate``,
  ``quicklook``): :class:`PredictionTags`.

A file that does not fit its contract gets one clear error naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from geoseg.errors import NotAPredictionError

PREDICTION_SCHEMA = 1
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PredictionTags:
    """What ``geoseg predict`` records in its GeoTIFF: classes (one per band), thresholds, model."""

    classes: tuple[str, ...]
    thresholds: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    schema_version: int = PREDICTION_SCHEMA

    def to_tags(self) -> dict[str, str]:
        """GDAL metadata items (strings) for ``dataset.update_tags``."""
        tags = {
            "geoseg_schema": str(self.schema_version),
            "geoseg_classes": json.dumps(list(self.classes)),
            "geoseg_thresholds": json.dumps(self.thresholds),
        }
        if self.model is not None:
            tags["geoseg_model"] = self.model
        return tags

    @classmethod
    def from_tags(cls, tags: dict, descriptions, source: str | os.PathLike) -> PredictionTags:
        """Parse tags and band descriptions; refuse a raster that ``predict`` did not write."""
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
        except (ValueError, TypeError, AttributeError) as exc:
            raise NotAPredictionError(f"{source}: damaged geoseg tags ({exc})") from None
        if len(classes) != len(descriptions):
            raise NotAPredictionError(
                f"{source}: geoseg tags name {len(classes)} classes for {len(descriptions)} bands"
            )
        if version > PREDICTION_SCHEMA:
            raise NotAPredictionError(
                f"{source}: written by a newer geoseg (prediction schema {version})"
            )
        return cls(classes, thresholds, tags.get("geoseg_model"), version)

    @classmethod
    def read(cls, path: str | os.PathLike) -> PredictionTags:
        """The tags of the prediction GeoTIFF at ``path``."""
        import rasterio

        with rasterio.open(path) as src:
            return cls.from_tags(src.tags(), src.descriptions, path)


def probability_bands(path: str | os.PathLike) -> tuple[list[str], dict[str, float]]:
    """Class names (one per band) and stored thresholds of a ``geoseg predict`` raster."""
    tags = PredictionTags.read(path)
    return list(tags.classes), dict(tags.thresholds)
