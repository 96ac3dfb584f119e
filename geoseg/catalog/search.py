"""``geoseg.search``: from a place and date windows to one VRT per window, and their items."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.catalog.items import (
    WindowItems,
    check_assets,
    choose,
    find_items,
    majority_crs,
    open_client,
    within_cloud,
)
from geoseg.catalog.mosaic import SIGNERS, asset_path, grid_of, open_asset, window_vrt
from geoseg.catalog.request import parse_bbox, parse_window
from geoseg.errors import OutputExistsError, ParameterError
from geoseg.io.outputs import staged_directory
from geoseg.io.raster import open_raster

logger = logging.getLogger(__name__)

ITEMS_FILE = "items.json"


@dataclass(frozen=True)
class Scene:
    """One window's result: its VRT and the items painted into it."""

    window: str
    path: Path
    items: WindowItems

    def summary(self) -> str:
        chosen = self.items.chosen
        clouds = ", ".join("?" if f.cloud is None else f"{f.cloud:.1f} %" for f in chosen)
        return (
            f"{self.window}: {len(chosen)} item(s) (cloud {clouds}), "
            f"{100 * self.items.coverage:.0f} % of the bbox -> {self.path}"
        )


def search(
    stac: str,
    collection: str,
    bbox,
    dates: Sequence[str],
    assets: Sequence[str],
    out: str | os.PathLike,
    *,
    bbox_crs: str = "EPSG:4326",
    max_cloud: float | None = None,
    sign: str | None = None,
    overwrite: bool = False,
) -> list[Scene]:
    """Find the least cloudy items of ``collection`` covering ``bbox`` in each date window of
    ``dates`` (``START/END``) and write one VRT per window into ``out``: ``assets`` as bands in
    that order, on the first asset's pixel grid clipped to the bbox (the same grid for every
    window, so ``predict`` takes them as dates of one place), read by window over the network.
    ``out/items.json`` records the chosen items. ``sign="planetary-computer"`` has GDAL sign
    Planetary Computer URLs when it reads them."""
    box = parse_bbox(bbox, bbox_crs)
    windows = [parse_window(d) for d in dates]
    assets = [a.strip() for a in assets if a.strip()]
    _check_request(windows, assets, max_cloud)
    if sign not in (None, *SIGNERS):
        raise ParameterError(f"`sign` {sign!r} is not one of {', '.join(SIGNERS)}")
    _check_out(Path(out))
    chosen, crs = _choose_items(open_client(stac), collection, box, windows, assets, max_cloud)
    top = chosen[0].chosen[0]
    reference = open_asset(asset_path(top.item.assets[assets[0]], collection, sign), top.id,
                           assets[0])  # fmt: skip
    grid = grid_of(reference, box, crs or reference.crs)
    logger.info("grid: %s, %d x %d px of %g", grid.crs.to_string(), grid.width, grid.height,
                abs(grid.transform.a))  # fmt: skip

    scenes = []
    with staged_directory(out, overwrite) as staging:
        for items in chosen:
            name = f"{items.window.stem}.vrt"
            (staging / name).write_text(window_vrt(items.chosen, assets, grid, collection, sign))
            with open_raster(staging / name) as src:  # a VRT GDAL cannot open is never written
                src.read(1, window=((0, 1), (0, 1)))
            scenes.append(Scene(str(items.window), Path(out) / name, items))
        search = {"stac": stac, "collection": collection, "bbox": list(box.as_tuple()),
                  "assets": assets, "max_cloud": max_cloud,
                  "crs": grid.crs.to_string()}  # fmt: skip
        record = {**search, "windows": [_window_record(s, assets) for s in scenes]}
        (staging / ITEMS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    for scene in scenes:
        logger.info("%s", scene.summary())
    return scenes


def _check_request(windows, assets: list[str], max_cloud: float | None) -> None:
    if not windows or not assets:
        raise ParameterError("a search needs at least one of `dates` and one of `assets`")
    if len({str(w) for w in windows}) != len(windows):
        raise ParameterError("two of `dates` are the same window")
    if len(set(assets)) != len(assets):
        raise ParameterError(f"`assets` names one asset twice: {','.join(assets)}")
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise ParameterError(f"`max_cloud` ({max_cloud}) must be a percentage, 0 to 100")


def _choose_items(client, collection, box, windows, assets, max_cloud):
    """Each window's chosen items, and the CRS they share."""
    found = []
    for window in windows:
        candidates = within_cloud(find_items(client, collection, box, window), window, max_cloud)
        check_assets(candidates, assets)
        found.append(candidates)
    crs = majority_crs(found)
    return [choose(w, f, box, crs) for w, f in zip(windows, found)], crs


def _window_record(scene: Scene, assets: list[str]) -> dict:
    """One window of ``items.json``: its VRT, coverage, chosen items and those left out."""
    items = [
        {**f.describe(), "hrefs": {a: f.item.assets[a].href for a in assets}}
        for f in scene.items.chosen
    ]
    return {"dates": scene.window, "vrt": scene.path.name,
            "coverage": round(scene.items.coverage, 4), "items": items,
            "left_out": scene.items.left_out}  # fmt: skip


def _check_out(out: Path) -> None:
    """Refuse an output folder that holds anything but an earlier search's files (replacing
    it with ``overwrite`` would delete them)."""
    if not out.is_dir():
        return
    others = [p.name for p in out.iterdir() if p.suffix != ".vrt" and p.name != ITEMS_FILE]
    if others:
        raise OutputExistsError(
            f"{out} holds other files than a search's ({', '.join(sorted(others)[:3])}): "
            "choose an empty or new folder"
        )
