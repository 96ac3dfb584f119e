"""``geoseg tile``: plan the chip grid, cut chips with Dask, split them spatially, index them."""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
import shapely
from rasterio.warp import transform_bounds

from geoseg.contracts import (
    DATASET_NAME,
    DATASET_SCHEMA,
    DISTANCE_SCALE,
    DatasetRecord,
    delineation_method,
    describe_delineation,
    role_names,
)
from geoseg.errors import LabelsError, ParameterError, RasterError, ResourceError, first_line
from geoseg.io.outputs import check_apart, check_output, staged_directory
from geoseg.io.raster import (
    RasterInfo,
    band_statistics,
    open_raster_info,
    sample_valid_pixels,
    window_offsets,
)
from geoseg.io.remote import absolute
from geoseg.labels.masks import (
    FILE_NODATA,
    LabelSpec,
    Length,
    RasterLabels,
    ignored_background,
    open_labels,
    parse_label_nodata,
)
from geoseg.parallel import Progress, compute
from geoseg.tiling.chips import DEFAULT_CODEC, Chip, ChipResult, ChipRules, check_codec, cut_chips
from geoseg.version import __version__

logger = logging.getLogger(__name__)

MIN_SPLIT_BLOCKS = 10
BLOCK_CHIPS = 4
"""Split blocks are about this many chips a side."""
SPLIT_BY = ("auto", "scene", "blocks")
MIN_SCENES_TO_SPLIT_BY_SCENE = 5
SCENE_AT_MOST_BLOCKS = 1.5
"""With ``split_by="auto"``, scenes whose larger side is at most this many split blocks are
split whole (by scene), when there are enough of them and they do not overlap."""
SPLITS = ("train", "val", "test")
"""In order of precedence: a chip sharing pixels with a chip of a later split is kept aside."""
SPARE = "spare"
"""The split of chips kept aside at split borders: one model neither trains nor validates on
them; ``train --folds`` pools them with train and val (those clear of the test chips)."""
DOMINANT_CLASS = 0.95
"""A class positive on more of the labelled pixels than this gets a warning."""
COUNTS = (
    "candidates",
    "written",
    "train",
    "val",
    "test",
    "dropped_nodata",
    "dropped_empty",
    "spare",
    "dropped_unlabelled",
)


@dataclass
class TileSummary:
    """Counts of a tiling run, as also written to ``dataset.json``, and its warnings."""

    out: Path
    candidates: int
    written: int
    train: int
    val: int
    dropped_nodata: int
    dropped_empty: int
    spare: int
    """Chips kept aside at split borders (split ``spare``), in ``written`` too."""
    test: int = 0
    dropped_unlabelled: int = 0
    split_by: str = "blocks"
    val_fraction_reached: float = 0.0
    test_fraction_reached: float = 0.0
    classes: list[str] = field(default_factory=list)
    class_frequencies: dict[str, float] = field(default_factory=dict)
    """Classes: share of labelled pixels that are positive; regression targets: mean value."""
    targets: dict[str, dict] = field(default_factory=dict)
    chips_per_scene: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A line for a terminal, then one line per warning."""
        splits = f"{self.train} train, {self.val} val = {self.val_fraction_reached:.1%}"
        if self.test:
            splits += f", {self.test} test = {self.test_fraction_reached:.1%}"
        line = (
            f"wrote {self.written} chips to {self.out} ({splits}; split by {self.split_by}) "
            f"from {self.candidates} candidates; dropped {self.dropped_nodata} for nodata, "
            f"{self.dropped_empty} empty"
        )
        if self.dropped_unlabelled:
            line += f", {self.dropped_unlabelled} in images without labels"
        if self.spare:
            line += f"; kept {self.spare} aside at split borders (spare: only folds use them)"
        if self.class_frequencies:
            regression = {k for k, t in self.targets.items() if t.get("kind") == "regression"}
            frequencies = self.class_frequencies.items()
            shares = ", ".join(f"{k} {v:.1%}" for k, v in frequencies if k not in regression)
            means = ", ".join(f"{k} {v:.2f}" for k, v in frequencies if k in regression)
            line += f"; positive pixels: {shares}" if shares else ""
            line += f"; mean {means}" if means else ""
        roles = role_names(self.targets)
        lines = [line] + ([describe_delineation(roles)] if delineation_method(roles) else [])
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def tile(
    images: Sequence[str],
    out: str,
    *,
    labels: str | None = None,
    class_field: str | None = None,
    classes: Sequence[str] | None = None,
    boundary_width: str | float | Length | None = None,
    distance: bool = False,
    label_nodata: float | str | None = FILE_NODATA,
    labels_layer: str | None = None,
    sparse_labels: str | float | Length | None = None,
    size: int = 256,
    stride: int | None = None,
    keep_empty: float = 0.1,
    max_nodata: float = 0.5,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    split_by: str = "auto",
    seed: int = 0,
    compress: str = DEFAULT_CODEC,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TileSummary:
    """Cut rasters into ``size`` x ``size`` georeferenced chips with masks burned from labels.

    Writes ``images/``, ``masks/`` (with labels), ``chips.gpkg`` and ``dataset.json`` into
    ``out``, which appears only once everything is written. ``label_nodata`` is the label
    raster's value to ignore: its own nodata by default (``"file"``), or None (``"none"``) for
    none. ``sparse_labels`` (a length, e.g. ``"3px"``) says that vector labels leave features
    undrawn: pixels farther than it from every feature are ignored (255) in the masks rather than
    background. ``distance`` adds the regression band ``distance``: inside each polygon (a parcel,
    whatever its class) the distance to its outline over the parcel's largest, 0 outside,
    stored as 0..254. ``val_fraction`` and ``test_fraction`` are shares of the written chips,
    assigned by spatial blocks or whole scenes (``split_by``: ``"auto"``, ``"scene"``,
    ``"blocks"``). ``compress`` is the chips' codec: ``"zstd"`` (level 1), ``"deflate"``,
    ``"lzw"`` or ``"none"``.
    """
    started = time.perf_counter()
    stride = size if stride is None else stride
    _check_parameters(images, size, stride, keep_empty, max_nodata, val_fraction, test_fraction)
    if split_by not in SPLIT_BY:
        raise ParameterError(f"`split_by` must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    check_codec(compress)
    images = [absolute(p) for p in images]
    labels = None if labels is None else absolute(labels)
    check_apart([out], [*images, labels])
    check_output(out, overwrite)
    infos = [open_raster_info(p) for p in images]
    _check_consistent(infos)
    _check_size(infos, size)
    spec = _label_spec(
        labels, class_field, classes, boundary_width, label_nodata, distance, labels_layer,
        sparse_labels,
    )  # fmt: skip
    loaded = open_labels(spec) if spec else None
    covered = [loaded is None or loaded.overlaps(i.crs, i.bounds) for i in infos]
    if not any(covered):
        raise LabelsError(f"{spec.path}: labels do not overlap any input raster")

    plans, mode, block_px = _plan_scenes(infos, size, stride, split_by, seed)
    candidates = sum(p.count for p in plans)
    unlabelled = [p for p, c in zip(plans, covered) if not c]
    warnings = [
        f"labels do not cover {p.name} ({p.info.path}): its {p.count} chips were dropped"
        for p in unlabelled
    ]
    labelled = [p for p, c in zip(plans, covered) if c]
    rules = ChipRules(size, keep_empty, max_nodata, spec, compress)

    with staged_directory(out, overwrite) as staging:
        results, samples = _cut(staging, labelled, rules, seed, workers, scheduler, progress)
        kept = [r for r in results if r.status == "kept"]
        footprints = _footprints(kept, plans, size)
        _split(kept, footprints, plans, mode, (val_fraction, test_fraction), seed)
        targets = loaded.targets if loaded else {}
        frequencies = _class_frequencies(kept, targets)
        warnings += _class_warnings(frequencies, loaded, spec)
        for warning in warnings:  # also in the summary, which the CLI prints
            logger.info("warning: %s", warning)
        _write_index(staging / "chips.gpkg", kept, footprints, plans, targets, size)
        summary = _summary(out, candidates, results, kept, unlabelled, mode, loaded, frequencies)
        summary.warnings += warnings
        sampling = {
            "keep_empty": keep_empty, "max_nodata": max_nodata, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "seed": seed, "split_by": mode,
            "split_block_px": block_px if mode == "blocks" else None,
            "val_fraction_reached": round(summary.val_fraction_reached, 6),
            "test_fraction_reached": round(summary.test_fraction_reached, 6),
        }  # fmt: skip
        dataset = _dataset_record(infos, plans, loaded, summary, rules, stride, sampling, samples)
        DatasetRecord(dataset, staging / DATASET_NAME).write(staging / DATASET_NAME)
    logger.info("tiled in %.1f s: %d chips written", time.perf_counter() - started, len(kept))
    return summary


def _plan_scenes(infos, size: int, stride: int, split_by: str, seed: int):
    """The chip grid of every scene, the split mode resolved, and its block size."""
    plans = [
        plan_scene(info, name, size, stride, i, seed)
        for i, (info, name) in enumerate(zip(infos, scene_names([i.path for i in infos])))
    ]
    mode = _split_mode(split_by, plans, size, stride)
    block_px = _group_blocks(plans, size, stride, mode)
    logger.info(
        "plan: %d scenes, %d candidate chips of %d px every %d px; split by %s%s",
        len(plans), sum(p.count for p in plans), size, stride, mode,
        f" of {block_px} px" if mode == "blocks" else "",
    )  # fmt: skip
    return plans, mode, block_px


def _label_spec(
    labels, class_field, classes, boundary_width, label_nodata, distance, layer, sparse
) -> LabelSpec | None:
    """What to burn from ``labels``; None without labels, where the label options are refused."""
    boundary_width, sparse = (
        v if v is None or isinstance(v, Length) else Length.parse(str(v))
        for v in (boundary_width, sparse)
    )
    label_nodata = parse_label_nodata(label_nodata)
    if labels is not None:
        classes = tuple(classes) if classes else None
        return LabelSpec(
            str(labels), class_field, classes, boundary_width, label_nodata, distance, layer,
            sparse,
        )  # fmt: skip
    given = class_field or classes or boundary_width or distance or layer or sparse
    if given or label_nodata != FILE_NODATA:
        raise ParameterError(
            "`class_field`, `classes`, `boundary_width`, `distance`, `label_nodata`, "
            "`labels_layer` and `sparse_labels` need `labels`"
        )
    return None


def _cut(staging: Path, plans, rules: ChipRules, seed: int, workers, scheduler, progress):
    """Every chip of the ``plans`` cut into ``staging`` with Dask, and each scene's
    normalisation sample, read alongside the chips rather than after them."""
    (staging / "images").mkdir()
    if rules.labels:
        (staging / "masks").mkdir()
    tasks = [
        dask.delayed(cut_chips, pure=False)(plan.info.path, group, rules, str(staging))
        for plan in plans
        for group in plan.groups()
    ]
    sampling_tasks = [dask.delayed(sample_valid_pixels)(p.info.path, seed=seed) for p in plans]
    cut_start = time.perf_counter()
    computed = _compute(tasks + sampling_tasks, rules.size, workers, scheduler, progress)
    results = [r for batch in computed[: len(tasks)] for r in batch]
    logger.info(
        "cut %d chips in %d blocks in %.1f s",
        len(results), len(tasks), time.perf_counter() - cut_start,
    )  # fmt: skip
    return results, computed[len(tasks) :]


def _summary(out, candidates, results, kept, unlabelled, mode, loaded, frequencies) -> TileSummary:
    """The counts of a run (its warnings are added by the caller)."""
    written = len(kept)
    by_split = Counter(r.chip.split for r in kept)
    split = written - by_split[SPARE]
    return TileSummary(
        out=Path(out),
        candidates=candidates,
        written=written,
        train=by_split["train"],
        val=by_split["val"],
        test=by_split["test"],
        dropped_nodata=sum(r.status == "nodata" for r in results),
        dropped_empty=sum(r.status == "empty" for r in results),
        spare=by_split[SPARE],
        dropped_unlabelled=sum(p.count for p in unlabelled),
        split_by=mode,
        val_fraction_reached=by_split["val"] / split if split else 0.0,
        test_fraction_reached=by_split["test"] / split if split else 0.0,
        classes=loaded.classes if loaded else [],
        class_frequencies=frequencies,
        targets=loaded.targets if loaded else {},
        chips_per_scene=dict(Counter(r.chip.scene for r in kept)),
        warnings=[],
    )


def _compute(tasks, size: int, workers, scheduler, progress) -> list:
    """Run the tasks; running out of memory (huge chips) becomes a one-line error."""
    try:
        return compute(tasks, workers=workers, scheduler=scheduler, progress=progress)
    except MemoryError as exc:
        raise ResourceError(
            f"out of memory cutting {size} px chips ({first_line(exc)}): "
            "give a smaller `size`, or fewer `workers`"
        ) from None


def _check_parameters(
    images, size, stride, keep_empty, max_nodata, val_fraction, test_fraction
) -> None:
    if not images:
        raise ParameterError("give at least one image")
    if size <= 0 or size % 32:
        raise ParameterError(f"`size` must be a positive multiple of 32, got {size}")
    if stride <= 0:
        raise ParameterError(f"`stride` must be positive, got {stride}")
    if stride > size:
        raise ParameterError(f"`stride` ({stride}) must not be larger than `size` ({size})")
    for name, value in [
        ("`keep_empty`", keep_empty),
        ("`max_nodata`", max_nodata),
        ("`val_fraction`", val_fraction),
        ("`test_fraction`", test_fraction),
    ]:
        if not 0.0 <= value <= 1.0:
            raise ParameterError(f"{name} must be between 0 and 1, got {value}")
    if val_fraction + test_fraction > 1.0:
        raise ParameterError(
            f"`val_fraction` ({val_fraction}) and `test_fraction` ({test_fraction}) "
            "together must not exceed 1"
        )


def _check_size(infos: list[RasterInfo], size: int) -> None:
    """Refuse chips larger than the largest raster needs: they would be all padding."""
    largest = max(infos, key=lambda i: max(i.width, i.height))
    side = max(largest.width, largest.height)
    enough = 32 * math.ceil(side / 32)
    if size > enough:
        raise ParameterError(
            f"`size` {size} is larger than every input raster (the largest side is {side} px, "
            f"in {largest.path}): give `size` {enough} or less"
        )


def _check_consistent(infos: list[RasterInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if (info.count, info.dtype) != (first.count, first.dtype):
            raise RasterError(
                f"{info.path}: {info.count} bands of {info.dtype}, but {first.path} has "
                f"{first.count} bands of {first.dtype}; all images must match"
            )


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
    """A scene's chip grid (row and column offsets) and the block of each grid cell."""

    info: RasterInfo
    name: str
    index: int
    rows: list[int]
    cols: list[int]
    seed: int
    block: np.ndarray | None = None  # block id per grid cell: one Dask task per block

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def groups(self) -> list[list[Chip]]:
        """Chips grouped by block, one Dask task per group; their split is assigned later."""
        groups: dict[int, list[Chip]] = {}
        draws = np.random.default_rng([self.seed, self.index]).random(self.block.shape)
        for i, row in enumerate(self.rows):
            for j, col in enumerate(self.cols):
                chip = Chip(self.name, row, col, "", float(draws[i, j]))
                groups.setdefault(int(self.block[i, j]), []).append(chip)
        return list(groups.values())

    def block_of(self, row: int, col: int) -> int:
        """The block id of the chip at pixel offsets ``row``, ``col``."""
        return int(self.block[self.rows.index(row), self.cols.index(col)])


def plan_scene(
    info: RasterInfo, name: str, size: int, stride: int, index: int, seed: int
) -> ScenePlan:
    """The chip grid of one scene: every pixel falls in at least one chip."""
    rows = window_offsets(info.height, size, stride)
    cols = window_offsets(info.width, size, stride)
    return ScenePlan(info, name, index, rows, cols, seed)


def _block_steps(size: int, stride: int) -> int:
    """Grid steps a side of a split block of about :data:`BLOCK_CHIPS` chips."""
    return max(1, round(BLOCK_CHIPS * size / stride))


def _split_mode(split_by: str, plans: list[ScenePlan], size: int, stride: int) -> str:
    """``"scene"`` or ``"blocks"``; auto: by scene when there are enough small, separate scenes."""
    if split_by != "auto":
        return split_by
    block = _block_steps(size, stride) * stride
    small = all(max(p.info.width, p.info.height) <= SCENE_AT_MOST_BLOCKS * block for p in plans)
    if len(plans) >= MIN_SCENES_TO_SPLIT_BY_SCENE and small and not _scenes_overlap(plans):
        return "scene"
    return "blocks"


def _scenes_overlap(plans: list[ScenePlan]) -> bool:
    """Whether any two scenes share ground (compared in the first scene's CRS)."""
    target = plans[0].info.crs
    boxes = np.array(
        [shapely.box(*transform_bounds(p.info.crs, target, *p.info.bounds)) for p in plans]
    )
    first, second = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    pairs = first < second
    overlap = shapely.area(shapely.intersection(boxes[first[pairs]], boxes[second[pairs]]))
    return bool((overlap > 1e-9 * shapely.area(boxes[first[pairs]])).any())


def _group_blocks(plans: list[ScenePlan], size: int, stride: int, mode: str) -> int:
    """Number each chip's block; return the block side (px).

    Blocks are about four chips wide, smaller when that leaves fewer than ten blocks (when they
    are the split's units). They lie on one map grid per CRS, so scenes that overlap (a time
    series) share their blocks, and their split.
    """
    steps = _block_steps(size, stride)
    while True:
        n_blocks = _number_blocks(plans, steps * stride)
        if mode != "blocks" or n_blocks >= MIN_SPLIT_BLOCKS or steps == 1:
            return steps * stride
        steps //= 2


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


def _footprints(kept: list[ChipResult], plans: list[ScenePlan], size: int) -> np.ndarray:
    """Chip footprints in the first scene's CRS, in the order of ``kept``."""
    target = plans[0].info.crs
    out = np.empty(len(kept), dtype=object)
    scenes = np.array([r.chip.scene for r in kept])
    for plan in plans:
        at = np.flatnonzero(scenes == plan.name)
        if not len(at):
            continue
        rows = np.array([kept[i].chip.row for i in at])[:, None] + [0, 0, size, size]
        cols = np.array([kept[i].chip.col for i in at])[:, None] + [0, size, size, 0]
        xs, ys = plan.info.transform @ (cols, rows)
        polygons = shapely.polygons(np.stack([xs, ys], axis=-1))
        if plan.info.crs != target:
            polygons = gpd.GeoSeries(polygons, crs=plan.info.crs).to_crs(target).values
        out[at] = np.asarray(polygons, dtype=object)
    return out


def _split(
    kept: list[ChipResult],
    footprints: np.ndarray,
    plans: list[ScenePlan],
    mode: str,
    fractions: tuple[float, float],
    seed: int,
) -> None:
    """Assign train/val/test to the kept chips (in place) by scene or by block.

    Chips that share pixels with a chip of another split are kept aside (split
    :data:`SPARE`).
    """
    if not kept:
        return
    start = time.perf_counter()
    by_name = {p.name: p for p in plans}
    if mode == "scene":
        units = [by_name[r.chip.scene].index for r in kept]
    else:
        units = [by_name[r.chip.scene].block_of(r.chip.row, r.chip.col) for r in kept]
    _, unit_of = np.unique(units, return_inverse=True)
    search = _SplitSearch(unit_of, overlap_pairs(footprints, unit_of), fractions)
    search.run(seed)
    codes = search.code[unit_of]
    for r, code, alive in zip(kept, codes, search.alive):
        r.chip = replace(r.chip, split=SPLITS[code] if alive else SPARE)
    logger.info(
        "split by %s: %d units; %d train, %d val, %d test chips, %d spare at borders (%.2f s)",
        mode,
        search.code.size,
        *search.counts,
        int((~search.alive).sum()),
        time.perf_counter() - start,
    )


def overlap_pairs(footprints: np.ndarray, unit_of: np.ndarray) -> np.ndarray:
    """Pairs (2, n) of chips of different units whose footprints share pixels (not only edges)."""
    first, second = shapely.STRtree(footprints).query(footprints, predicate="intersects")
    candidate = (first < second) & (unit_of[first] != unit_of[second])
    first, second = first[candidate], second[candidate]
    shared = shapely.area(shapely.intersection(footprints[first], footprints[second]))
    real = shared > 1e-6 * shapely.area(footprints[first])  # touching edges share no pixel
    return np.stack([first[real], second[real]])


class _SplitSearch:
    """A greedy split of units (scenes or blocks) that reaches target shares of the chips.

    Units are visited in a seeded random order; each goes to val or test when that brings the
    shares of the chips closer to the targets. A chip that shares pixels with a chip of a later
    split in :data:`SPLITS` is dropped, so the shares are those of the chips that remain.
    """

    def __init__(self, unit_of: np.ndarray, pairs: np.ndarray, fractions: tuple[float, float]):
        n = len(unit_of)
        self.unit_of = unit_of
        self.targets = np.array([1.0 - sum(fractions), *fractions])
        self.code = np.zeros(int(unit_of.max()) + 1, dtype=np.int64)
        self.alive = np.ones(n, dtype=bool)
        self.counts = np.array([n, 0, 0])
        chips, neighbours = np.concatenate(pairs), np.concatenate(pairs[::-1])
        order = np.argsort(chips, kind="stable")
        self.neighbours = neighbours[order]
        self.starts = np.searchsorted(chips[order], np.arange(n + 1))
        # a unit's move decides the fate of its own chips and of those that overlap them
        owner = np.concatenate([unit_of, unit_of[chips]])
        member = np.concatenate([np.arange(n), neighbours])
        order = np.lexsort((member, owner))
        bounds = np.searchsorted(owner[order], np.arange(1, self.code.size))
        self.affected = [np.unique(m) for m in np.split(member[order], bounds)]

    def run(self, seed: int) -> None:
        """Assign every unit, then make sure each asked-for split has at least one unit."""
        options = [s for s in (1, 2) if self.targets[s] > 0]
        for unit in np.random.default_rng(seed).permutation(self.code.size):
            trials = [(*self._trial(unit, s), s) for s in options]
            if trials:
                error, counts, alive, split = min(trials, key=lambda t: t[0])
                if error < self._error(self.counts) - 1e-12:
                    self._commit(unit, split, counts, alive)
        for split in options:
            if self.counts[split] == 0:
                trials = [(*self._trial(u, split), u) for u in np.flatnonzero(self.code == 0)]
                trials = [t for t in trials if t[1][0] > 0]  # keep some train chips
                if trials:
                    _, counts, alive, unit = min(trials, key=lambda t: t[0])
                    self._commit(unit, split, counts, alive)

    def _error(self, counts: np.ndarray) -> float:
        total = counts.sum()
        if total == 0 or (counts[0] == 0 and self.targets[0] > 0):
            return math.inf
        return float(np.abs(counts[1:] / total - self.targets[1:]).sum())

    def _trial(self, unit: int, split: int) -> tuple[float, np.ndarray, np.ndarray]:
        """The error, split counts and survival of the affected chips were ``unit`` moved."""
        chips = self.affected[unit]
        before_codes, before_alive = self.code[self.unit_of[chips]], self.alive[chips]
        old, self.code[unit] = self.code[unit], split
        alive = self._survives(chips)
        after_codes = self.code[self.unit_of[chips]]
        self.code[unit] = old
        counts = (
            self.counts
            - np.bincount(before_codes[before_alive], minlength=3)
            + np.bincount(after_codes[alive], minlength=3)
        )
        return self._error(counts), counts, alive

    def _commit(self, unit: int, split: int, counts: np.ndarray, alive: np.ndarray) -> None:
        self.code[unit] = split
        self.alive[self.affected[unit]] = alive
        self.counts = counts

    def _survives(self, chips: np.ndarray) -> np.ndarray:
        """Whether no chip overlapping each of ``chips`` is in a later split than its own."""
        lengths = self.starts[chips + 1] - self.starts[chips]
        offsets = np.repeat(self.starts[chips] - (np.cumsum(lengths) - lengths), lengths)
        neighbours = self.neighbours[np.arange(lengths.sum()) + offsets]
        highest = np.full(len(chips), -1)
        np.maximum.at(
            highest, np.repeat(np.arange(len(chips)), lengths), self.code[self.unit_of[neighbours]]
        )
        return self.code[self.unit_of[chips]] >= highest


def _class_frequencies(kept: list[ChipResult], targets: dict[str, dict]) -> dict[str, float]:
    """Over the kept chips' labelled pixels: each class's share of positive pixels, each
    regression target's mean value (0..1)."""
    labelled = sum(r.labelled for r in kept)
    if not targets or not labelled:
        return {c: 0.0 for c in targets}
    totals = np.sum([r.positives for r in kept], axis=0)
    return {
        name: float(n) / labelled / (1 if t["kind"] == "class" else DISTANCE_SCALE)
        for (name, t), n in zip(targets.items(), totals)
    }


def _class_warnings(frequencies: dict[str, float], labels, spec: LabelSpec | None) -> list[str]:
    """Classes of a label raster positive nearly everywhere, with the likely cause.

    Vector polygons that cover the whole image (a cadastre) are expected and only logged.
    """
    warnings = []
    for name, share in frequencies.items():
        if share <= DOMINANT_CLASS:
            continue
        text = f"class {name!r} is positive on {share:.1%} of the labelled pixels"
        if not isinstance(labels, RasterLabels):
            logger.info("%s", text)
            continue
        why = ignored_background(labels, spec)
        warnings.append(f"{text}: {why}" if why else text)
    return warnings


def _write_index(
    path: Path,
    kept: list[ChipResult],
    footprints: np.ndarray,
    plans: list[ScenePlan],
    targets: dict[str, dict],
    size: int,
) -> None:
    """``chips.gpkg``: one footprint per kept chip, in the first scene's CRS; per class its
    positive share of the chip (``positive_<class>``), per regression target its mean over the
    labelled pixels (``mean_<target>``)."""
    crs_of = {p.name: p.info.crs.to_string() for p in plans}
    pixels = size * size
    rows = [
        {
            "id": r.chip.id,
            "scene": r.chip.scene,
            "row": r.chip.row,
            "col": r.chip.col,
            "split": r.chip.split,
            "nodata_fraction": round(r.nodata_fraction, 6),
            **_chip_shares(r, targets, pixels),
            "image": f"images/{r.chip.id}.tif",
            "mask": f"masks/{r.chip.id}.tif" if targets else None,
            "crs": crs_of[r.chip.scene],
        }
        for r in kept
    ]
    target = plans[0].info.crs
    frame = (
        gpd.GeoDataFrame(rows, geometry=list(footprints), crs=target)
        if rows
        else gpd.GeoDataFrame({"id": [], "split": []}, geometry=[], crs=target)
    )
    frame.to_file(path, layer="chips", driver="GPKG", engine="pyogrio")


def _chip_shares(result: ChipResult, targets: dict[str, dict], pixels: int) -> dict:
    """A chip's ``positive_<class>`` shares and ``mean_<target>`` values for its index row."""
    shares = {}
    for (name, target), n in zip(targets.items(), result.positives):
        if target["kind"] == "class":
            shares[f"positive_{name}"] = round(n / pixels, 6)
        else:
            shares[f"mean_{name}"] = round(n / DISTANCE_SCALE / max(result.labelled, 1), 6)
    return shares


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinity: write those as strings ("nan", "inf")."""
    return value if math.isfinite(value) else str(value)


def _labels_record(labels) -> dict | None:
    if labels is None:
        return None
    spec = labels.spec
    record = {
        "path": absolute(spec.path),
        "class_field": spec.class_field,
        "boundary_width": str(spec.boundary_width) if spec.boundary_width else None,
        "distance": spec.distance,
        "sparse_reach": str(spec.sparse_reach) if spec.sparse_reach else None,
    }
    if isinstance(labels, RasterLabels):
        record["nodata"] = None if labels.nodata is None else _json_number(labels.nodata)
    return record


def _dataset_record(infos, plans, labels, summary, rules, stride, sampling: dict, samples) -> dict:
    first = infos[0]
    return {
        "schema_version": DATASET_SCHEMA,
        "geoseg_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "chip_size": rules.size,
        "stride": stride,
        "compress": rules.compress,
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
        "targets": summary.targets,
        "class_frequencies": summary.class_frequencies,
        "labels": _labels_record(labels),
        "sampling": sampling,
        "counts": {name: getattr(summary, name) for name in COUNTS},
        "warnings": summary.warnings,
        "scenes": [
            {
                "name": plan.name,
                "path": absolute(plan.info.path),
                "crs": plan.info.crs.to_string(),
                "width": plan.info.width,
                "height": plan.info.height,
                "transform": list(plan.info.transform)[:6],
                "chips": summary.chips_per_scene.get(plan.name, 0),
            }
            for plan in plans
        ],
    }
