"""What a synthetic scene is made of: crops, field edges, roofs and land that is not parcels,
with their colours, and the scene's vector layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

# Colours as (R, G, B, NIR) on a 0..255 reflectance-like scale.
CROPS = {
    "wheat": ((188, 168, 108, 125), 0.10),
    "maize": ((72, 112, 52, 205), 0.18),
    "grassland": ((92, 140, 72, 220), 0.0),
    "bare_soil": ((138, 108, 84, 100), 0.22),
    "rapeseed": ((208, 198, 64, 190), 0.12),
    "stubble": ((172, 158, 124, 112), 0.15),
}
EDGES = {  # colour, width in metres, share of edges
    "none": (None, 0.0, 0.40),
    "hedge": ((36, 62, 32, 150), 5.0, 0.25),
    "track": ((166, 150, 128, 118), 3.0, 0.25),
    "road": ((108, 108, 114, 80), 7.0, 0.10),
}
ROOFS = [(158, 72, 56, 62), (118, 118, 124, 70), (90, 60, 50, 50)]
SHADOW = (34, 34, 40, 22)
# Land that is not parcels, in the order it claims ground: colour, texture contrast, and the
# sizes in metres of its fine and coarse texture (tree crowns and clumps, gravel and patches).
COVER = {
    "road": ((108, 108, 114, 80), 0.04, (1.0, 12.0)),
    "verge": ((116, 136, 82, 185), 0.16, (1.2, 8.0)),
    "farmyard": ((150, 143, 130, 105), 0.10, (2.0, 10.0)),
    "village": ((98, 138, 74, 205), 0.12, (2.0, 8.0)),
    "water": ((22, 38, 52, 10), 0.05, (6.0, 80.0)),
    "wood": ((44, 68, 40, 168), 0.30, (3.5, 18.0)),
}
GARDENS = {  # colour, share of village gardens
    "lawn": ((98, 140, 74, 210), 0.45),
    "beds": ((126, 104, 80, 115), 0.20),
    "trees": ((52, 80, 46, 172), 0.25),
    "paving": ((152, 148, 142, 100), 0.10),
}
HA = 10_000.0  # square metres
GRID = 1e-4  # pixels: overlays of non-field land snap to it (robust, valid in map coordinates)


def no_geoms() -> np.ndarray:
    return np.empty(0, dtype=object)


@dataclass
class Scene:
    """Vector layout of a scene, in pixel coordinates (x = column, y = row)."""

    parcels: np.ndarray  # Polygon per parcel
    crop: np.ndarray  # crop index per parcel
    brightness: np.ndarray
    row_angle: np.ndarray
    row_period: np.ndarray
    edges: np.ndarray  # LineString per field edge
    edge_kind: np.ndarray  # index into EDGES per edge
    buildings: np.ndarray  # Polygon per building
    roof: np.ndarray
    cover: np.ndarray = field(default_factory=no_geoms)  # Polygon per piece of non-field land
    cover_kind: np.ndarray = field(default_factory=lambda: np.empty(0, int))  # index into COVER
    gardens: np.ndarray = field(default_factory=no_geoms)  # village gardens (inside cover)
    garden_kind: np.ndarray = field(default_factory=lambda: np.empty(0, int))  # into GARDENS

    def cover_shares(self, size: int) -> dict[str, float]:
        """Share of the ``size`` x ``size`` scene covered by each kind of non-field land."""
        areas = np.bincount(self.cover_kind, shapely.area(self.cover), minlength=len(COVER))
        return {k: float(a) / size**2 for k, a in zip(COVER, areas, strict=True)}
