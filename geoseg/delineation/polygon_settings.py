"""The options that shape polygons, one record shared by ``vectorize`` and ``predict``'s
``vectors`` (the CLI's ``--mode``, thresholds, ``--min-area`` and ``--simplify``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from geoseg.errors import ParameterError

MODES = ("regions", "parcels")


@dataclass(frozen=True)
class PolygonSettings:
    """How probabilities become polygons (see :func:`geoseg.vectorize` for each field)."""

    mode: str = "regions"
    threshold: float | None = None
    extent_threshold: float | None = None
    marker_threshold: float | None = None
    parcel_threshold: float | None = None
    min_area: float = 0.0
    simplify: float = 0.0

    def check(self) -> None:
        """Refuse values no run can use (before ``predict`` spends time on its raster)."""
        if self.mode not in MODES:
            raise ParameterError(f"`mode` must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not (0 <= self.min_area < math.inf and 0 <= self.simplify < math.inf):
            raise ParameterError("`min_area` and `simplify` must be finite and not negative")

    def to_kwargs(self) -> dict:
        """The fields as :func:`geoseg.vectorize`'s keyword arguments."""
        return asdict(self)
