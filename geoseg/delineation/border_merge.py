"""Regions cut by block edges, united as soon as the blocks around them have arrived.

A block's border pieces are its polygons that reach one of its inner edges. Two pieces across
an edge are one region when a pair of neighbouring pixels has the same label in either block's
window (the block's own labels of its edge line and of the halo line beyond it). A region is
whole once every block holding one of its pieces has all its neighbours in: its pieces are then
united and handed on. With blocks arriving in row order only about two rows of blocks' border
pieces are held at a time, whatever the size of the raster.

With a join (parcels whose border carries little boundary are one), a parcel's fate depends on
the boundary along its whole border, which the blocks around it add up: every parcel is a
piece, held with the summed boundary along each of its borders. A group of regions joined by
weak borders is handed on once every region in it, and every region it borders, is whole: no
border of the group can change then. Memory still holds about two rows of blocks' parcels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.delineation.regions import pair_sums, weak_border_groups

logger = logging.getLogger(__name__)

POLYGON = shapely.GeometryType.POLYGON
NEIGHBOURS = (((0, 1), "right", "left"), ((1, 0), "bottom", "top"),
              ((0, -1), "left", "right"), ((-1, 0), "top", "bottom"))  # fmt: skip
"""Offset of each neighbour of a block, the block's side facing it and the neighbour's."""


class BorderBlock(Protocol):
    """What the merge reads of one block's output (``vectorizing.BlockPolygons``)."""

    index: tuple[int, int]
    border: Pieces
    edges: dict  # (class, side) -> (labels inside the block edge, labels just outside it, ...)
    pairs: tuple  # with a join: (first label, second label, pixel pairs, summed boundary level)


@dataclass
class Pieces:
    """Polygons with their class, label, pixel count and summed score (0..255 per pixel)."""

    classes: np.ndarray
    labels: np.ndarray
    geometry: np.ndarray
    pixels: np.ndarray
    score: np.ndarray

    @classmethod
    def concat(cls, parts: list[Pieces]) -> Pieces:
        if not parts:
            dtypes = (np.int64, np.int64, object, np.int64, np.float64)
            return cls(*(np.empty(0, dtype) for dtype in dtypes))
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def select(self, keep: np.ndarray) -> Pieces:
        return Pieces(*(getattr(self, f.name)[keep] for f in fields(self)))

    def __len__(self) -> int:
        return len(self.labels)


class BorderMerge:
    """The border pieces of the blocks seen so far; :meth:`add` returns the regions it made
    whole, united (pixel coordinates)."""

    def __init__(self, classes: int, block_size: int, rows: int, cols: int, join: int = 0):
        self.classes, self.block_size, self.shape = classes, block_size, (rows, cols)
        self.join = join
        self.borders: list[tuple[np.ndarray, ...]] = []  # piece ids, pixel pairs, summed level
        self.arrived = np.zeros((rows, cols), bool)
        self.settled = np.zeros((rows, cols), bool)  # arrived, and so have all its neighbours
        self.held = Pieces.concat([])
        self.held_ids = np.zeros(0, np.int64)  # increasing
        self.held_block = np.zeros((0, 2), np.int64)
        self.links = np.zeros((2, 0), np.int64)  # ids of pieces of one region across an edge
        self.lookup: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.edges: dict[tuple[int, int], dict] = {}
        self.next_id = 0

    def add(self, block: BorderBlock) -> Pieces:
        """Hold ``block``'s border pieces, link them to its neighbours', unite whole regions."""
        index, border = block.index, block.border
        ids = np.arange(self.next_id, self.next_id + len(border), dtype=np.int64)
        self.next_id += len(border)
        self.held = Pieces.concat([self.held, border])
        self.held_ids = np.concatenate([self.held_ids, ids])
        self.held_block = np.concatenate([self.held_block, np.tile(index, (len(border), 1))])
        keys = piece_keys(border.classes, border.labels)
        order = np.argsort(keys)
        self.lookup[index], self.edges[index] = (keys[order], ids[order]), dict(block.edges)
        if self.join and block.pairs:
            first, second, count, total = block.pairs
            ids = self.ids(index, 0, first), self.ids(index, 0, second)
            self.borders.append((*ids, count, total))
        self.arrived[index] = True
        for neighbour, mine, theirs in self.neighbours(index):
            if self.arrived[neighbour]:
                self.link(index, mine, neighbour, theirs)
        self.settle_around(index)
        return self.unite_whole()

    def neighbours(self, index: tuple[int, int]):
        rows, cols = self.shape
        for (dr, dc), mine, theirs in NEIGHBOURS:
            row, col = index[0] + dr, index[1] + dc
            if 0 <= row < rows and 0 <= col < cols:
                yield (row, col), mine, theirs

    def link(self, a: tuple[int, int], side_a: str, b: tuple[int, int], side_b: str) -> None:
        """Record the pieces of ``a`` and ``b`` that are one region across their common edge."""
        pairs = []
        for k in range(self.classes):
            in_a, out_a, *level_a = self.edges[a].pop((k, side_a))
            in_b, out_b, *level_b = self.edges[b].pop((k, side_b))
            if self.join:
                across = (in_a > 0) & (in_b > 0)
                level = np.maximum(level_a[0][across], level_b[0][across]).astype(np.float64)
                ids = self.ids(a, k, in_a[across]), self.ids(b, k, in_b[across])
                self.borders.append((*ids, np.ones(len(level)), level))
            same = (in_a > 0) & (in_b > 0) & ((in_a == out_a) | (in_b == out_b))
            if same.any():
                labels_a, labels_b = np.unique(np.stack([in_a[same], in_b[same]]), axis=1)
                pairs.append(np.stack([self.ids(a, k, labels_a), self.ids(b, k, labels_b)]))
        self.links = np.concatenate([self.links, *pairs], axis=1)

    def ids(self, index: tuple[int, int], k: int, labels: np.ndarray) -> np.ndarray:
        keys, ids = self.lookup[index]
        return ids[np.searchsorted(keys, piece_keys(k, labels))]

    def settle_around(self, index: tuple[int, int]) -> None:
        """Mark ``index`` and its neighbours settled where all their neighbours are in: their
        pieces' links are all known, and their lookups and edge lines no longer needed."""
        for block in [index, *(n for n, _, _ in self.neighbours(index))]:
            around = all(self.arrived[n] for n, _, _ in self.neighbours(block))
            if self.arrived[block] and around and not self.settled[block]:
                self.settled[block] = True
                del self.lookup[block], self.edges[block]

    def unite_whole(self) -> Pieces:
        """Unite and stop holding the regions whose pieces all lie in settled blocks (with a
        join: the groups of joined regions whose borders can no longer change)."""
        if not len(self.held):
            return Pieces.concat([])
        n = len(self.held)
        local = np.searchsorted(self.held_ids, self.links)
        graph = coo_matrix((np.ones(local.shape[1]), (local[0], local[1])), shape=(n, n))
        count, region = connected_components(graph, directed=False)
        unsettled = ~self.settled[tuple(self.held_block.T)]
        open_ = np.bincount(region, unsettled.astype(float), minlength=count) > 0
        group = self.final_groups(region, open_) if self.join else np.where(open_, -1, 0)
        whole = group[region] >= 0
        if not whole.any():
            return Pieces.concat([])
        united = unite_regions(self.held.select(whole), region[whole], self.block_size)
        if self.join:  # united holds one piece per region, in the order of the region numbers
            _, joined = np.unique(group[np.unique(region[whole])], return_inverse=True)
            united = join_groups(united, joined, int(joined.max()) + 1)
            self.forget_borders(self.held_ids[whole])
        self.links = self.links[:, ~whole[local[0]]]
        self.held = self.held.select(~whole)
        self.held_ids, self.held_block = self.held_ids[~whole], self.held_block[~whole]
        return united

    def final_groups(self, region: np.ndarray, open_: np.ndarray) -> np.ndarray:
        """Per region: its group of regions joined by weak borders, or -1 while a region of the
        group, or one the group borders, still misses pieces (its borders are still summed)."""
        first, second, count, total = self.summed_borders()
        a = region[np.searchsorted(self.held_ids, first)]
        b = region[np.searchsorted(self.held_ids, second)]
        apart = a != b  # pieces of one region: no border
        first, second, count, total = pair_sums(a[apart], b[apart], total[apart], count[apart])
        known = ~open_[first] & ~open_[second]
        borders = (first[known], second[known], count[known], total[known])
        groups, group = weak_border_groups(borders, self.join, len(open_))
        waiting = np.bincount(group, open_.astype(float), minlength=groups) > 0
        waiting[group[first[open_[second]]]] = True
        waiting[group[second[open_[first]]]] = True
        return np.where(waiting[group], -1, group)

    def summed_borders(self) -> tuple[np.ndarray, ...]:
        """(first piece, second piece, pixel pairs, summed level) of every border held."""
        if not self.borders:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0), np.zeros(0)
        self.borders = [tuple(np.concatenate(parts) for parts in zip(*self.borders))]
        return self.borders[0]

    def forget_borders(self, gone: np.ndarray) -> None:
        """Stop holding the borders of pieces handed on (the others' borders with them are
        strong: a weak one would have joined them into the group handed on)."""
        first, second, count, total = self.summed_borders()
        keep = ~(np.isin(first, gone) | np.isin(second, gone))
        self.borders = [(first[keep], second[keep], count[keep], total[keep])]


def join_groups(pieces: Pieces, group: np.ndarray, groups: int) -> Pieces:
    """One polygon per ``group`` of whole, edge-sharing ``pieces`` (an overlay union: a joined
    piece may fill another's hole), with summed pixels and score."""
    sizes = np.bincount(group, minlength=groups)
    geometry = np.empty(groups, dtype=object)
    alone = sizes[group] == 1
    geometry[group[alone]] = pieces.geometry[alone]
    for g in np.flatnonzero(sizes > 1):
        geometry[g] = shapely.simplify(shapely.union_all(pieces.geometry[group == g]), 0.0)
    first = np.full(groups, -1)
    first[group[::-1]] = np.arange(len(group))[::-1]
    return Pieces(
        pieces.classes[first],
        np.arange(groups, dtype=np.int64),
        geometry,
        np.bincount(group, weights=pieces.pixels, minlength=groups).astype(np.int64),
        np.bincount(group, weights=pieces.score, minlength=groups),
    )


def piece_keys(classes, labels) -> np.ndarray:
    """One integer per (class, label) pair."""
    return (np.asarray(classes, np.int64) << 32) + np.asarray(labels, np.int64)


def unite_regions(pieces: Pieces, region: np.ndarray, block_size: int) -> Pieces:
    """One polygon per ``region`` of ``pieces`` (any integers), with summed pixels and score."""
    ids, group = np.unique(region, return_inverse=True)
    order = np.argsort(group, kind="stable")
    first = order[np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]]
    return Pieces(
        pieces.classes[first],
        np.arange(len(ids), dtype=np.int64),
        unite_groups(pieces.geometry, group, len(ids), block_size),
        np.bincount(group, weights=pieces.pixels, minlength=len(ids)).astype(np.int64),
        np.bincount(group, weights=pieces.score, minlength=len(ids)),
    )


def unite_groups(geometry: np.ndarray, group: np.ndarray, groups: int, block_size: int):
    """The union of the pieces of each group (pixel coordinates, whole regions once united).

    Exact and without overlay of the holes: a piece's holes lie inside its block, so they are
    holes of the region as they are; only the outer rings are united, as a coverage (they share
    edges and never overlap), and lose the vertices the block edges left on straight runs.
    """
    united = np.empty(groups, dtype=object)
    sizes = np.bincount(group, minlength=groups)
    alone = (sizes[group] == 1) & (shapely.get_type_id(geometry) == POLYGON)
    united[group[alone]] = geometry[alone]
    if alone.all():
        return united
    parts, owner = shapely.get_parts(geometry[~alone], return_index=True)
    part_group = group[~alone][owner]
    chosen = np.unique(part_group)
    shells = shapely.polygons(shapely.get_exterior_ring(parts))
    outer = unite_shells(shells, part_group, chosen, block_size)
    exact = outer != None  # noqa: E711 (elementwise)
    if exact.any():
        holes, hole_part = interior_rings(parts)
        hole_group = part_group[hole_part]
        keep = np.isin(hole_group, chosen[exact])
        outer = drop_collinear(outer[exact])
        united[chosen[exact]] = with_holes(outer, holes[keep], hole_group[keep], chosen[exact])
    for g in chosen[~exact]:  # never seen: the general overlay
        logger.debug("coverage union failed; overlay union of the pieces of region %d", g)
        united[g] = shapely.simplify(shapely.union_all(geometry[group == g]), 0.0)
    return united


def unite_shells(shells, group: np.ndarray, groups: np.ndarray, block_size: int) -> np.ndarray:
    """The union of the outer rings (``shells``) of each of ``groups``; None where it is not
    one polygon of their total area (which a coverage gives)."""
    order = np.argsort(group, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(group[order])) + 1)
    dense = densify_block_edges(shells, block_size)
    areas = shapely.area(shells)
    return np.array([coverage_union(dense[m], areas[m].sum()) for m in members], dtype=object)


def coverage_union(dense: np.ndarray, area: float):
    """The union of polygons that share edges vertex for vertex and never overlap, or None."""
    try:
        united = shapely.coverage_union_all(dense)
    except shapely.errors.GEOSException:
        return None
    return united if united.geom_type == "Polygon" and united.area == area else None


def densify_block_edges(shells: np.ndarray, block_size: int) -> np.ndarray:
    """Polygons without holes (pixel coordinates) with a vertex at every pixel corner along
    block edges, so that pieces on both sides of an edge share theirs."""
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(shells), return_index=True)
    starts = np.flatnonzero(np.r_[ring[1:] == ring[:-1], False])  # segment i: i -> i + 1
    start, step = coords[starts], coords[starts + 1] - coords[starts]
    length = np.abs(step).sum(axis=1)
    on_edge = ((step[:, 0] == 0) & (start[:, 0] % block_size == 0)) | (
        (step[:, 1] == 0) & (start[:, 1] % block_size == 0)
    )
    counts = np.where(on_edge, length, 1).astype(np.int64)
    segment = np.repeat(np.arange(len(starts)), counts)
    k = np.arange(len(segment)) - np.repeat(np.cumsum(counts) - counts, counts)
    unit = step / np.maximum(length, 1)[:, None]  # axis-parallel: exact
    points = start[segment] + k[:, None] * unit[segment]
    return shapely.polygons(shapely.linearrings(points, indices=ring[starts][segment]))


def interior_rings(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The holes of ``polygons`` and the index of the polygon of each."""
    rings, owner = shapely.get_rings(polygons, return_index=True)
    hole = np.r_[False, owner[1:] == owner[:-1]]  # each polygon's first ring is its shell
    return rings[hole], owner[hole]


def with_holes(outer: np.ndarray, holes: np.ndarray, hole_group, groups: np.ndarray):
    """``outer`` polygons (one per group of ``groups``) with the holes of their group added."""
    rings, owner = shapely.get_rings(outer, return_index=True)
    position = np.searchsorted(groups, hole_group)
    owner = np.concatenate([owner, position])
    shell = np.r_[True, owner[1 : len(rings)] != owner[: len(rings) - 1]]
    rank = np.concatenate([~shell, np.ones(len(holes), bool)])  # shells first
    order = np.lexsort((rank, owner))
    return shapely.polygons(np.concatenate([rings, holes])[order], indices=owner[order])


def drop_collinear(polygons: np.ndarray) -> np.ndarray:
    """Polygons without the vertices in the middle of straight runs (exact in pixel units)."""
    rings, owner = shapely.get_rings(polygons, return_index=True)
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[ring[1:] != ring[:-1], True]
    coords, ring = coords[~closing], ring[~closing]
    index = np.arange(len(ring))
    starts = np.r_[0, np.flatnonzero(np.diff(ring)) + 1]
    ends = np.r_[starts[1:], len(ring)] - 1
    before, after = index - 1, index + 1
    before[starts], after[ends] = ends, starts
    d1, d2 = coords - coords[before], coords[after] - coords
    keep = d1[:, 0] * d2[:, 1] != d1[:, 1] * d2[:, 0]
    rings = shapely.linearrings(coords[keep], indices=ring[keep])
    return shapely.polygons(rings, indices=owner)
