"""The options that shape polygons, one record shared by ``vectorize`` and ``predict``'s
``vectors`` (the CLI's ``--mode``, thresholds, ``--split``, ``--join``, ``--min-area`` and
``--simplify``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from geoseg.errors import ParameterError

MODES = ("regions", "parcels")
LEVELS = {
    "extent_threshold": "(0, 1]",
    "marker_threshold": "(0, 1]",
    "parcel_threshold": "[0, 1]",
    "split": "[0, 1]",
    "join": "[0, 1]",
}
"""The delineation options and the range each must lie in (0 switches the last three off)."""


@dataclass(frozen=True)
class PolygonSettings:
    """How probabilities become polygons (see :func:`geoseg.vectorize` for each field)."""

    mode: str = "regions"
    threshold: float | None = None
    extent_threshold: float | None = None
    marker_threshold: float | None = None
    parcel_threshold: float | None = None
    split: float | None = None
    join: float | None = None
    min_area: float = 0.0
    simplify: float = 0.0

    def check(self) -> None:
        """Refuse values no run can use (before ``predict`` spends time on its raster)."""
        if self.mode not in MODES:
            raise ParameterError(f"`mode` must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not (0 <= self.min_area < math.inf and 0 <= self.simplify < math.inf):
            raise ParameterError("`min_area` and `simplify` must be finite and not negative")
        for name, allowed in LEVELS.items():
            value = getattr(self, name)
            if value is None:
                continue
            low_ok = value > 0 if allowed.startswith("(") else value >= 0
            if not (low_ok and value <= 1):
                raise ParameterError(f"`{name}` must be in {allowed}, got {value}")

    def to_kwargs(self) -> dict:
        """The fields as :func:`geoseg.vectorize`'s keyword arguments."""
        return asdict(self)
