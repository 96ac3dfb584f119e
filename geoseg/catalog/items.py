"""Items of a STAC API: found per date window with pystac-client, and the least cloudy that
cover the bounding box chosen, all in one CRS."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import shapely
from pyproj import CRS
from shapely.geometry import shape

from geoseg.catalog.request import Bbox, DateWindow
from geoseg.errors import CatalogError, CatalogUnreachableError, first_line

logger = logging.getLogger(__name__)

MAX_ITEMS = 2000
"""Items read per window at most (a window of a few months over one place holds far fewer)."""


@dataclass(frozen=True)
class Found:
    """One item of a window: the pystac item, its cloud cover (None: not given), its CRS."""

    item: object
    cloud: float | None
    crs: CRS | None

    @property
    def id(self) -> str:
        return self.item.id

    def describe(self) -> dict:
        """The item's provenance for ``items.json``."""
        return {
            "id": self.item.id,
            "datetime": self.item.properties.get("datetime"),
            "cloud_cover": self.cloud,
            "crs": self.crs.to_string() if self.crs else None,
        }


@dataclass
class WindowItems:
    """The items chosen for one window, least cloudy first, and those left out with why."""

    window: DateWindow
    chosen: list[Found]
    coverage: float
    left_out: list[dict] = field(default_factory=list)


def open_client(url: str, modifier=None):
    """A pystac-client ``Client`` of the STAC API at ``url``; one line when it cannot be read."""
    from pystac_client import Client

    try:
        return Client.open(url, modifier=modifier, timeout=30)
    except Exception as exc:  # requests' and pystac-client's errors alike
        raise CatalogUnreachableError(
            f"cannot read the STAC API at {url}: {first_line(exc)}"
        ) from None


def find_items(client, collection: str, bbox: Bbox, window: DateWindow) -> list[Found]:
    """The items of ``collection`` that intersect ``bbox`` within ``window``."""
    try:
        search = client.search(
            collections=[collection], bbox=bbox.as_tuple(), datetime=str(window),
            max_items=MAX_ITEMS,
        )  # fmt: skip
        items = list(search.items())
    except Exception as exc:
        raise CatalogUnreachableError(
            f"the STAC search for {collection} in {window} failed: {first_line(exc)}"
        ) from None
    if len(items) == MAX_ITEMS:
        logger.warning("%s: more than %d items; only the first were read", window, MAX_ITEMS)
    return [Found(item, _cloud(item), _item_crs(item)) for item in items]


def _cloud(item) -> float | None:
    value = item.properties.get("eo:cloud_cover")
    return None if value is None else float(value)


def _item_crs(item) -> CRS | None:
    """The item's CRS from the projection extension (on the item or its first asset)."""
    for properties in (item.properties, *(a.extra_fields for a in item.assets.values())):
        code = properties.get("proj:code") or properties.get("proj:epsg")
        if code is not None:
            return CRS.from_user_input(f"EPSG:{code}" if isinstance(code, int) else code)
        if properties.get("proj:wkt2"):
            return CRS.from_wkt(properties["proj:wkt2"])
    return None


def check_assets(found: list[Found], assets: list[str]) -> None:
    """Refuse items that lack one of ``assets``, listing the assets they have."""
    for candidate in found:
        missing = [a for a in assets if a not in candidate.item.assets]
        if missing:
            raise CatalogError(
                f"item {candidate.id} has no asset {', '.join(missing)}; its assets: "
                f"{', '.join(sorted(candidate.item.assets))}"
            )


def within_cloud(found: list[Found], window: DateWindow, max_cloud: float | None) -> list[Found]:
    """The items with at most ``max_cloud`` % cloud cover (items that do not say are kept);
    none is one line naming the window and the least cloud cover found."""
    if not found:
        raise CatalogError(f"no item intersects the bbox in {window}")
    kept = [f for f in found if max_cloud is None or f.cloud is None or f.cloud <= max_cloud]
    if not kept:
        least = min(f.cloud for f in found)
        raise CatalogError(
            f"no item in {window} has cloud cover <= {max_cloud:g} % ({len(found)} items; the "
            f"least cloudy has {least:g} %): raise `max_cloud` or widen the window"
        )
    return kept


def majority_crs(windows: list[list[Found]]) -> CRS | None:
    """The CRS most items share across the windows (ties: the one of the least cloudy item)."""
    every = [f for found in windows for f in found if f.crs is not None]
    if not every:
        return None
    counts = Counter(f.crs.to_string() for f in every)
    clearest = [f.crs.to_string() for f in sorted(every, key=_cloud_order)]
    return CRS.from_user_input(max(counts, key=lambda c: (counts[c], -clearest.index(c))))


def _cloud_order(found: Found) -> tuple[float, float]:
    """Least cloudy first; items without a cloud cover after those with one."""
    return (found.cloud is None, found.cloud or 0.0)


def choose(window: DateWindow, found: list[Found], bbox: Bbox, crs: CRS | None) -> WindowItems:
    """The least cloudy items in ``crs`` until they cover ``bbox``; items in another CRS are
    left out (reprojecting them would resample the mosaic)."""
    area = shapely.box(*bbox.as_tuple())
    left_out, chosen = [], []
    uncovered = area
    for candidate in sorted(found, key=_cloud_order):
        if crs is not None and candidate.crs is not None and candidate.crs != crs:
            left_out.append({"id": candidate.id, "why": f"in {candidate.crs.to_string()}"})
            continue
        footprint = shape(candidate.item.geometry)
        if uncovered.is_empty or not footprint.intersects(uncovered):
            continue
        chosen.append(candidate)
        uncovered = uncovered.difference(footprint)
    if not chosen:
        raise CatalogError(
            f"no item in {window} lies in {crs.to_string() if crs else 'the common CRS'}; "
            f"{len(left_out)} in other CRSs were left out"
        )
    coverage = 1.0 - uncovered.area / area.area
    if left_out:
        logger.info("%s: %d item(s) in another CRS than %s left out", window, len(left_out),
                    crs.to_string() if crs else "the mosaic's")  # fmt: skip
    if coverage < 0.999:
        logger.warning("%s: the chosen items cover %.0f %% of the bbox; the rest is nodata",
                       window, 100 * coverage)  # fmt: skip
    return WindowItems(window, chosen, coverage, left_out)
