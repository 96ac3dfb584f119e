"""``geoseg tile``: plan the chip grid and the spatial split, cut chips with Dask, index them."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import shapely

from geoseg import __version__
from geoseg.chips import Chip, ChipResult, ChipRules, cut_chips
from geoseg.errors import LabelsError, ParameterError, RasterError
from geoseg.labels import LabelSpec, Length, open_labels
from geoseg.outputs import check_not_inside, check_output, staged_directory
from geoseg.parallel import Progress, compute
from geoseg.raster import (
    RasterInfo,
    band_statistics,
    open_raster_info,
    sample_valid_pixels,
    window_offsets,
)

SCHEMA_VERSION = 1
MIN_SPLIT_BLOCKS = 10
COUNTS = (
    "candidates",
    "written",
    "train",
    "val",
    "dropped_nodata",
    "dropped_empty",
    "dropped_split_buffer",
)


@dataclass
class TileSummary:
    """Counts of a tiling run, as also written to ``dataset.json``."""

    out: Path
    candidates: int
    written: int
    train: int
    val: int
    dropped_nodata: int
    dropped_empty: int
    dropped_split_buffer: int
    classes: list[str] = field(default_factory=list)
    class_frequencies: dict[str, float] = field(default_factory=dict)
    chips_per_scene: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for a terminal."""
        line = (
            f"wrote {self.written} chips to {self.out} ({self.train} train, {self.val} val) "
            f"from {self.candidates} candidates; dropped {self.dropped_nodata} for nodata, "
            f"{self.dropped_empty} empty, {self.dropped_split_buffer} at split borders"
        )
        if self.class_frequencies:
            shares = ", ".join(f"{k} {v:.1%}" for k, v in self.class_frequencies.items())
            line += f"; positive pixels: {shares}"
        return line


def tile(
    images: Sequence[str],
    out: str,
    *,
    labels: str | None = None,
    class_field: str | None = None,
    classes: Sequence[str] | None = None,
    boundary_width: str | float | Length | None = None,
    size: int = 256,
    stride: int | None = None,
    keep_empty: float = 0.1,
    max_nodata: float = 0.5,
    val_fraction: float = 0.2,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TileSummary:
    """Cut rasters into ``size`` x ``size`` georeferenced chips with masks burned from labels.

    Writes ``images/``, ``masks/`` (with labels), ``chips.gpkg`` and ``dataset.json`` into
    ``out``, which appears only once everything is written.
    """
    stride = size if stride is None else stride
    _check_parameters(images, size, stride, keep_empty, max_nodata, val_fraction)
    check_output(out, overwrite)
    images = [str(Path(p).absolute()) for p in images]
    labels = None if labels is None else str(Path(labels).absolute())
    check_not_inside(out, images + ([labels] if labels else []))
    if boundary_width is not None and not isinstance(boundary_width, Length):
        boundary_width = Length.parse(str(boundary_width))
    infos = [open_raster_info(p) for p in images]
    _check_consistent(infos)
    spec = None
    if labels is not None:
        spec = LabelSpec(
            str(labels), class_field, tuple(classes) if classes else None, boundary_width
        )
        _check_overlap(spec, infos)
    elif class_field or classes or boundary_width:
        raise ParameterError("--class-field, --classes and --boundary-width need --labels")
    class_names = open_labels(spec).classes if spec else []

    names = scene_names([i.path for i in infos])
    plans = [
        plan_scene(info, name, size, stride, i, seed)
        for i, (info, name) in enumerate(zip(infos, names))
    ]
    split_block = _assign_splits(plans, size, stride, val_fraction, seed)
    rules = ChipRules(size, keep_empty, max_nodata, spec)
    candidates = sum(p.count for p in plans)

    with staged_directory(out, overwrite) as staging:
        (staging / "images").mkdir()
        if spec:
            (staging / "masks").mkdir()
        tasks = [
            dask.delayed(cut_chips, pure=False)(plan.info.path, group, rules, str(staging))
            for plan in plans
            for group in plan.groups()
        ]
        # the normalisation sample is read alongside the chips rather than after them
        sampling_tasks = [dask.delayed(sample_valid_pixels)(info.path, seed=seed) for info in infos]
        computed = compute(
            tasks + sampling_tasks, workers=workers, scheduler=scheduler, progress=progress
        )
        samples = computed[len(tasks) :]
        results = [r for batch in computed[: len(tasks)] for r in batch]
        kept = [r for r in results if r.status == "kept"]
        frequencies = _class_frequencies(kept, class_names)
        _write_index(staging / "chips.gpkg", kept, plans, class_names, size)
        summary = TileSummary(
            out=Path(out),
            candidates=candidates,
            written=len(kept),
            train=sum(r.chip.split == "train" for r in kept),
            val=sum(r.chip.split == "val" for r in kept),
            dropped_nodata=sum(r.status == "nodata" for r in results),
            dropped_empty=sum(r.status == "empty" for r in results),
            dropped_split_buffer=candidates - len(results),
            classes=class_names,
            class_frequencies=frequencies,
            chips_per_scene=dict(Counter(r.chip.scene for r in kept)),
        )
        sampling = {
            "keep_empty": keep_empty,
            "max_nodata": max_nodata,
            "val_fraction": val_fraction,
            "seed": seed,
            "split_block_px": split_block,
        }
        dataset = _dataset_record(infos, plans, spec, summary, size, stride, sampling, samples)
        (staging / "dataset.json").write_text(json.dumps(dataset, indent=2, allow_nan=False) + "\n")
    return summary


def _check_parameters(images, size, stride, keep_empty, max_nodata, val_fraction) -> None:
    if not images:
        raise ParameterError("give at least one image")
    if size <= 0 or size % 32:
        raise ParameterError(f"--size must be a positive multiple of 32, got {size}")
    if stride <= 0:
        raise ParameterError(f"--stride must be positive, got {stride}")
    if stride > size:
        raise ParameterError(f"--stride ({stride}) must not be larger than --size ({size})")
    for name, value in [
        ("--keep-empty", keep_empty),
        ("--max-nodata", max_nodata),
        ("--val-fraction", val_fraction),
    ]:
        if not 0.0 <= value <= 1.0:
            raise ParameterError(f"{name} must be between 0 and 1, got {value}")


def _check_consistent(infos: list[RasterInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if (info.count, info.dtype) != (first.count, first.dtype):
            raise RasterError(
                f"{info.path}: {info.count} bands of {info.dtype}, but {first.path} has "
                f"{first.count} bands of {first.dtype}; all images must match"
            )


def _check_overlap(spec: LabelSpec, infos: list[RasterInfo]) -> None:
    labels = open_labels(spec)
    if not any(labels.overlaps(info.crs, info.bounds) for info in infos):
        raise LabelsError(f"{spec.path}: labels do not overlap any input raster")


def scene_names(paths: Sequence[str]) -> list[str]:
    """Short unique names for scenes: the file stem, prefixed by its folder when stems collide."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "scene"

    stems = [clean(Path(p).stem) for p in paths]
    names = [
        clean(f"{Path(p).parent.name}-{s}") if stems.count(s) > 1 else s
        for p, s in zip(paths, stems)
    ]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


@dataclass
class ScenePlan:
    """A scene's chip grid (row and column offsets) and per-chip split labels."""

    info: RasterInfo
    name: str
    index: int
    rows: list[int]
    cols: list[int]
    seed: int
    block: np.ndarray | None = None  # split-block id per grid cell
    split: np.ndarray | None = None  # "train"/"val"/"" (dropped at a split border) per cell

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def groups(self) -> list[list[Chip]]:
        """Chips grouped by split block, one Dask task per group."""
        groups: dict[int, list[Chip]] = {}
        draws = np.random.default_rng([self.seed, self.index]).random(self.split.shape)
        for i, row in enumerate(self.rows):
            for j, col in enumerate(self.cols):
                if self.split[i, j]:
                    chip = Chip(self.name, row, col, str(self.split[i, j]), float(draws[i, j]))
                    groups.setdefault(int(self.block[i, j]), []).append(chip)
        return list(groups.values())


def plan_scene(
    info: RasterInfo, name: str, size: int, stride: int, index: int, seed: int
) -> ScenePlan:
    """The chip grid of one scene: every pixel falls in at least one chip."""
    rows = window_offsets(info.height, size, stride)
    cols = window_offsets(info.width, size, stride)
    return ScenePlan(info, name, index, rows, cols, seed)


def _assign_splits(
    plans: list[ScenePlan], size: int, stride: int, val_fraction: float, seed: int
) -> int:
    """Split by square blocks of chips so that neighbours share a split; return the block side (px).

    Blocks are about four chips wide, smaller when that leaves fewer than ten blocks. They lie on
    one map grid per CRS, so scenes that overlap (a time series) share their split. Train chips
    that overlap a val chip (``stride < size``) are dropped so no pixel is in both splits.
    """
    steps = max(1, round(4 * size / stride))
    while True:
        n_blocks = _number_blocks(plans, steps * stride)
        if n_blocks >= MIN_SPLIT_BLOCKS or steps == 1:
            break
        steps //= 2
    n_val = round(val_fraction * n_blocks)
    if n_blocks > 1 and 0 < val_fraction < 1:
        n_val = min(max(n_val, 1), n_blocks - 1)
    val_blocks = np.random.default_rng(seed).permutation(n_blocks)[:n_val]
    reach = math.ceil(size / stride) - 1
    for plan in plans:
        is_val = np.isin(plan.block, val_blocks)
        plan.split = np.where(is_val, "val", "train").astype(object)
        plan.split[~is_val & _near(is_val, reach)] = ""
    return steps * stride


def _number_blocks(plans: list[ScenePlan], block_px: int) -> int:
    """Set each plan's block ids from the map position of its chips; return the block count.

    The grid of each CRS starts at the first scene in that CRS and has its pixel size.
    """
    anchors: dict[str, tuple[float, float, float]] = {}
    ids: dict[tuple, int] = {}
    for plan in plans:
        t, crs = plan.info.transform, plan.info.crs.to_string()
        x0, y0, side = anchors.setdefault(crs, (t.c, t.f, block_px * plan.info.pixel_size))
        cols, rows = np.meshgrid(np.array(plan.cols) + 0.5, np.array(plan.rows) + 0.5)
        xs, ys = t @ (cols, rows)
        bx = np.floor((xs - x0) / side).astype(int)
        by = np.floor((y0 - ys) / side).astype(int)
        keys = zip([crs] * bx.size, bx.ravel(), by.ravel())
        plan.block = np.array([ids.setdefault(k, len(ids)) for k in keys]).reshape(bx.shape)
    return len(ids)


def _near(grid: np.ndarray, reach: int) -> np.ndarray:
    """True where a True cell lies within ``reach`` grid steps (a square neighbourhood)."""
    if reach == 0:
        return np.zeros_like(grid)
    padded = np.pad(grid, reach)
    out = np.zeros_like(grid)
    h, w = grid.shape
    for di in range(2 * reach + 1):
        for dj in range(2 * reach + 1):
            out |= padded[di : di + h, dj : dj + w]
    return out


def _class_frequencies(kept: list[ChipResult], classes: list[str]) -> dict[str, float]:
    """Share of labelled pixels that are positive, per class, over the kept chips."""
    labelled = sum(r.labelled for r in kept)
    if not classes or not labelled:
        return {c: 0.0 for c in classes}
    totals = np.sum([r.positives for r in kept], axis=0)
    return {c: float(n) / labelled for c, n in zip(classes, totals)}


def _write_index(
    path: Path, kept: list[ChipResult], plans: list[ScenePlan], classes: list[str], size: int
) -> None:
    """``chips.gpkg``: one footprint per kept chip, in the first scene's CRS."""
    by_scene = {p.name: p.info for p in plans}
    target = plans[0].info.crs
    rows, geoms = [], []
    for r in kept:
        info = by_scene[r.chip.scene]
        footprint = _footprint(info, r.chip, size)
        if info.crs != target:
            footprint = gpd.GeoSeries([footprint], crs=info.crs).to_crs(target).iloc[0]
        geoms.append(footprint)
        pixels = size * size
        rows.append(
            {
                "id": r.chip.id,
                "scene": r.chip.scene,
                "row": r.chip.row,
                "col": r.chip.col,
                "split": r.chip.split,
                "nodata_fraction": round(r.nodata_fraction, 6),
                **{f"positive_{c}": round(n / pixels, 6) for c, n in zip(classes, r.positives)},
                "image": f"images/{r.chip.id}.tif",
                "mask": f"masks/{r.chip.id}.tif" if classes else None,
                "crs": info.crs.to_string(),
            }
        )
    frame = (
        gpd.GeoDataFrame(rows, geometry=geoms, crs=target)
        if rows
        else gpd.GeoDataFrame({"id": [], "split": []}, geometry=[], crs=target)
    )
    frame.to_file(path, layer="chips", driver="GPKG", engine="pyogrio")


def _footprint(info: RasterInfo, chip: Chip, size: int) -> shapely.Polygon:
    corners = [
        (chip.col, chip.row),
        (chip.col + size, chip.row),
        (chip.col + size, chip.row + size),
        (chip.col, chip.row + size),
    ]
    return shapely.Polygon([info.transform @ c for c in corners])


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinity: write those as strings ("nan", "inf")."""
    return value if math.isfinite(value) else str(value)


def _dataset_record(infos, plans, spec, summary, size, stride, sampling: dict, samples) -> dict:
    first = infos[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "geoseg_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "chip_size": size,
        "stride": stride,
        "bands": {
            "count": first.count,
            "dtype": first.dtype,
            "nodata": None if first.nodata is None else _json_number(first.nodata),
            "descriptions": list(first.descriptions),
        },
        "normalization": {
            "method": "percentile",
            "low": "p2",
            "high": "p98",
            "bands": band_statistics(samples),
        },
        "classes": summary.classes,
        "class_frequencies": summary.class_frequencies,
        "labels": None
        if spec is None
        else {
            "path": str(Path(spec.path).absolute()),
            "class_field": spec.class_field,
            "boundary_width": str(spec.boundary_width) if spec.boundary_width else None,
        },
        "sampling": sampling,
        "counts": {name: getattr(summary, name) for name in COUNTS},
        "scenes": [
            {
                "name": plan.name,
                "path": str(Path(plan.info.path).absolute()),
                "crs": plan.info.crs.to_string(),
                "width": plan.info.width,
                "height": plan.info.height,
                "transform": list(plan.info.transform)[:6],
                "chips": summary.chips_per_scene.get(plan.name, 0),
            }
            for plan in plans
        ],
    }
