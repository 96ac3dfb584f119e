"""Connected regions of a raster window, as label images: per-class regions or parcels.

Labels are computed on a window with a halo around a block. Label numbers mean nothing outside
their window; the pixels a label covers in the block, and which neighbouring pixels share a label,
do not depend on where the window is, which is what the merge across blocks relies on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.contracts import Delineation

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)

GAP_RADIUS = 2
"""Gaps in predicted boundaries up to about twice this many pixels are closed (parcels mode)."""

FILL_STEPS = 8
"""Boundary pixels up to this far from a parcel are given to the nearest one (parcels mode)."""

PARCELS_HALO = 2 * GAP_RADIUS + FILL_STEPS + 2
"""Pixels around a block that decide its parcel labels."""


def region_labels(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean mask, numbered from 1 (0 = background)."""
    labels, _ = ndimage.label(mask, structure=FOUR_CONNECTED)
    return labels.astype(np.int32, copy=False)


def disk(radius: int) -> np.ndarray:
    """A boolean disk of ``radius`` pixels, for morphology."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def parcel_labels(boundary: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Parcels: the 4-connected areas that the ``boundary`` mask encloses.

    Gaps in the boundary up to ``2 * GAP_RADIUS`` pixels are closed first; then each boundary
    pixel (up to
    :data:`FILL_STEPS` away) goes to its nearest parcel, so that neighbouring parcels share
    their edge instead of being separated by the boundary line.
    """
    # Thickening the boundary closes its gaps; the growth below gives the pixels back. Beyond
    # the window everything counts as boundary: that may split a parcel near the window edge
    # (the merge across blocks joins it again) but never joins two.
    closed = ndimage.binary_dilation(boundary, structure=disk(GAP_RADIUS), border_value=1)
    labels = region_labels(~closed & valid)
    return grow_labels(labels, valid, FILL_STEPS)


_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1))  # N, W, S, E: a fixed order breaks ties


def grow_labels(labels: np.ndarray, allowed: np.ndarray, steps: int) -> np.ndarray:
    """Give unlabelled ``allowed`` pixels the label of a labelled 4-neighbour, ``steps`` times.

    Ties go to the first neighbour in N, W, S, E order, so the result depends on positions
    only, never on label numbers.
    """
    labels = labels.copy()
    height, width = labels.shape
    for _ in range(steps):
        open_ = (labels == 0) & allowed
        if not open_.any():
            break
        taken = np.zeros_like(labels)
        padded = np.pad(labels, 1)
        for dy, dx in _NEIGHBOURS:
            neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            pick = open_ & (taken == 0) & (neighbour > 0)
            taken[pick] = neighbour[pick]
        labels = np.where(open_, taken, labels)
    return labels


# Parcels from field extent, boundary and distance: a watershed of the distance with a bounded
# reach, so that every pixel's label depends only on the pixels around it (and on components,
# which the merge across blocks makes exact).

REACH_LEVELS = 8
"""Descending levels of the watershed (from the marker level down to 0)."""

REACH_STEPS = 8
"""Growth steps per level: markers reach ``REACH_LEVELS * REACH_STEPS`` pixels."""

REACH = REACH_LEVELS * REACH_STEPS
"""Pixels beyond a marker that the watershed of the distance decides (64: a field up to about
``2 * REACH / marker`` = 256 px across is grown from its marker alone at marker 0.5). Farther
field pixels join the parcel they touch unless the (gap-closed) boundary separates them."""

_SETTLED = REACH + GAP_RADIUS + 1
"""Pixels this far inside a window have their watershed state as in the whole raster."""

PEAK_RADIUS = 8
"""With ``split``, a marker pixel lies within the split depth of the highest elevation this many
pixels around it (an octagon: a square reaching half as far, widened by 4-neighbour steps for
the rest): the saddle between two fields that no boundary separates is left out."""

DELINEATION_HALO = _SETTLED + FILL_STEPS + 2 + PEAK_RADIUS
"""Pixels around a block that decide its parcel labels (extent mode)."""

SADDLE = 0.5
"""Parcels meeting where the elevation is at least this share of the marker level are one."""

NO_LEVEL = 256
"""A level no uint8 value reaches: the band is absent."""

QUIET_RADIUS = 3
"""Parcels that meet where no boundary pixel within this many pixels reaches the merge level
are one field (several distance peaks, no boundary between them)."""


def merge_level(threshold: float) -> int:
    """The boundary level (0..255) below which a contact of two parcels is quiet; 0: no merge."""
    return int(round(threshold * 255.0))


def quantized_level(threshold: float) -> int:
    """The smallest 0..255 value counted as positive at ``threshold`` (at least 1)."""
    return max(1, int(round(threshold * 255.0)))


def as_levels(values: np.ndarray | None) -> np.ndarray | None:
    """uint8 0..255 as in prediction rasters; floats in 0..1 are quantised like them."""
    if values is None or values.dtype == np.uint8:
        return values
    return np.clip(np.rint(np.asarray(values, np.float32) * 255.0), 0, 255).astype(np.uint8)


def delineate_parcels(
    extent: np.ndarray,
    boundary: np.ndarray | None,
    distance: np.ndarray | None,
    valid: np.ndarray | None,
    thresholds: Delineation,
) -> np.ndarray:
    """Parcel labels (int32, 0 = none) of whole arrays, exactly as ``vectorize`` finds them.

    ``extent``, ``boundary`` and ``distance`` are uint8 0..255 or floats 0..1 (``boundary`` or
    ``distance`` may be None); of ``thresholds``, the extent, boundary, marker and merge apply
    (see :func:`extent_parcel_labels`; the parcel threshold is :func:`confident_parcels`').
    """
    extent, boundary, distance = as_levels(extent), as_levels(boundary), as_levels(distance)
    valid = np.ones(extent.shape, bool) if valid is None else np.asarray(valid, bool)
    pad = DELINEATION_HALO  # as a block's halo beyond the raster: nothing there
    bands = [np.pad(b, pad) if b is not None else None for b in (extent, boundary, distance)]
    levels = delineation_levels(thresholds, boundary is not None)
    labels = extent_parcel_labels(*bands, np.pad(valid, pad), levels)[pad:-pad, pad:-pad]
    join = join_level(thresholds, boundary is not None)
    return join_weak_borders(labels, boundary, join) if join else labels


def delineation_levels(thresholds: Delineation, with_boundary: bool) -> tuple[int, ...]:
    """The extent, boundary, marker, merge and split levels (0..255) of delineation
    ``thresholds`` (the last two 0 when off, and without a boundary)."""
    levels = [quantized_level(getattr(thresholds, k)) for k in ("extent", "boundary", "marker")]
    merge = merge_level(thresholds.merge) if with_boundary else 0
    split = merge_level(thresholds.split) if with_boundary else 0
    return (levels[0], levels[1] if with_boundary else NO_LEVEL, levels[2], merge, split)


def join_level(thresholds: Delineation, with_boundary: bool) -> int:
    """The join level (0..255) of delineation ``thresholds``; 0 (off) without a boundary."""
    return merge_level(thresholds.join) if with_boundary else 0


def confident(score: np.ndarray, pixels: np.ndarray, threshold: float) -> np.ndarray:
    """Whether parcels with these summed extent levels (0..255 per pixel) over ``pixels``
    reach a mean extent probability of ``threshold``."""
    return np.asarray(score) >= threshold * 255.0 * np.asarray(pixels) - 1e-6


def confident_parcels(labels: np.ndarray, extent: np.ndarray, threshold: float) -> np.ndarray:
    """``labels`` without the parcels whose mean extent probability is below ``threshold``
    (``extent`` in 0..1 or uint8 levels), as ``vectorize`` drops them."""
    if threshold <= 0:
        return labels
    n = int(labels.max()) + 1
    pixels = np.bincount(labels.ravel(), minlength=n)
    score = np.bincount(labels.ravel(), weights=as_levels(extent).ravel(), minlength=n)
    kept = confident(score, pixels, threshold)
    kept[0] = False
    return np.where(kept[labels], labels, 0).astype(labels.dtype)


def extent_parcel_labels(extent, boundary, distance, valid, levels) -> np.ndarray:
    """Parcels of one window: markers grown into the field extent, then the far field pixels.

    ``levels`` (extent, boundary, marker, merge, split) are 0..255 levels, as
    :func:`delineation_levels` gives them (boundary :data:`NO_LEVEL`, merge and split 0 when
    absent). Markers: 4-connected field pixels with distance >= marker and boundary below its
    level; with a split level, only those within it of the highest elevation in
    :data:`PEAK_RADIUS`, so that a marker does not run from one field into the next through a
    gap in their boundary. They grow by a discrete watershed of the elevation (distance, lowered
    where the boundary is likely; ``255 - boundary`` without distance) reaching :data:`REACH`
    pixels, entering boundary pixels but never crossing them. Parcels then join where they meet
    on a high saddle (not with a split level: the split parcels meet there), or on quiet pixels:
    no boundary within :data:`QUIET_RADIUS` reaches the merge level (one field with several
    distance peaks); field pixels beyond join the parcels they touch through the gap-closed
    boundary's gaps, and the boundary pixels left go to their nearest parcel. Outside the
    extent: 0. Joining parcels by the boundary along their whole border
    (:func:`join_weak_borders`) is not a window's business: it follows.
    """
    e_level, b_level, m_level, merge, split = levels
    field = valid & (extent >= e_level)
    on_boundary = boundary >= b_level if boundary is not None else np.zeros_like(field)
    if distance is None and boundary is None:
        elevation, m_level = extent, e_level  # markers: the field itself
    elif distance is None:
        elevation, m_level = 255 - boundary.astype(np.int16), 256 - b_level
    elif boundary is None:
        elevation = distance.astype(np.int16)
    else:
        elevation = np.minimum(distance, 255 - boundary.astype(np.int16))
    markers = field & ~on_boundary & (elevation >= m_level)
    if split:
        markers &= elevation >= nearby_peak(elevation) - split
    steps = np.round(np.linspace(m_level, 0, REACH_LEVELS)).astype(int)
    labels = region_labels(markers)
    labels = grow_by_levels(labels, field, elevation, steps, REACH_STEPS, on_boundary)
    high = elevation >= m_level * SADDLE if not split else np.zeros_like(field)
    if merge:
        high |= ndimage.maximum_filter(boundary, footprint=disk(QUIET_RADIUS)) < merge
    labels = join_parcels(labels, field, on_boundary, high)
    return grow_by_levels(labels, field, elevation, [0], FILL_STEPS, on_boundary)


def nearby_peak(elevation: np.ndarray) -> np.ndarray:
    """The highest elevation within :data:`PEAK_RADIUS` of each pixel (an octagon of 1-D max
    filters: 4x faster than a disk's footprint on a 1194 px window, 0.06 s against 0.25 s)."""
    half = PEAK_RADIUS // 2
    peak = ndimage.maximum_filter(elevation, size=2 * half + 1, mode="constant")
    for _ in range(PEAK_RADIUS - half):  # 4-neighbour steps: a cross, as two 1-D filters
        peak = np.maximum(
            ndimage.maximum_filter1d(peak, 3, axis=0, mode="constant"),
            ndimage.maximum_filter1d(peak, 3, axis=1, mode="constant"),
        )
    return peak


def grow_by_levels(labels, allowed, elevation, levels, steps: int, walls=None) -> np.ndarray:
    """For each level (descending), ``steps`` times give unlabelled ``allowed`` pixels at or
    above it the label of a labelled 4-neighbour (first in N, W, S, E order), as
    :func:`grow_labels` does; only the growing front is visited. Labels enter ``walls``
    pixels (the boundary) but do not leave them: a parcel takes its share of the boundary
    without crossing it."""
    height, width = labels.shape
    stride = width + 2
    out = np.pad(labels, 1).ravel()  # a zero ring: no wrapping across rows
    allowed, elevation = np.pad(allowed, 1).ravel(), np.pad(elevation, 1).ravel()
    walls = np.pad(np.zeros(labels.shape, bool) if walls is None else walls, 1).ravel()
    offsets = np.array([-stride, -1, stride, 1])  # N, W, S, E
    for level in levels:
        open_ = allowed & (out == 0) & (elevation >= level)
        front = np.flatnonzero(open_ & _touches_labels(out, height, width))
        for _ in range(steps):
            if not front.size:
                break
            around = out[front[:, None] + offsets]
            around[walls[front[:, None] + offsets] & ~walls[front, None]] = 0
            taken = around[np.arange(front.size), np.argmax(around > 0, axis=1)]
            front, taken = front[taken > 0], taken[taken > 0]
            out[front] = taken
            if not front.size:
                break
            near = np.sort((front[:, None] + offsets).ravel())
            near = near[np.r_[True, near[1:] != near[:-1]]]
            front = near[open_[near] & (out[near] == 0)]
    return out.reshape(height + 2, width + 2)[1:-1, 1:-1]


def _touches_labels(padded_flat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flat mask (padded shape) of pixels with a labelled 4-neighbour."""
    grid = padded_flat.reshape(height + 2, width + 2) > 0
    touch = np.zeros_like(grid)
    inner = touch[1:-1, 1:-1]
    inner |= grid[:-2, 1:-1] | grid[2:, 1:-1] | grid[1:-1, :-2] | grid[1:-1, 2:]
    return touch.ravel()


def join_parcels(labels, field, on_boundary, high) -> np.ndarray:
    """Join parcels that meet on ``high`` pixels off the boundary (a high saddle: one field
    with two markers), and the field pixels the watershed did not reach: 4-connected areas of
    them between the gap-closed boundaries, each with the parcels it touches (or alone).

    Near the window's edge (where the watershed state may differ from the whole raster's)
    nothing joins: that may split a parcel there, which the merge joins again, never join two.
    """
    cut = ndimage.binary_dilation(on_boundary, structure=disk(GAP_RADIUS), border_value=1)
    free = field & (labels == 0) & ~cut
    margin = min(_SETTLED, *free.shape)
    ridge = high & (labels > 0) & ~on_boundary
    for mask in (free, ridge):
        mask[:margin], mask[-margin:], mask[:, :margin], mask[:, -margin:] = (False,) * 4
    areas = region_labels(free)
    first = int(labels.max())
    nodes = np.where(free, areas + first, labels)
    links = np.concatenate(
        [
            _touching_pairs(nodes[:-1], nodes[1:], free[:-1] | free[1:] | ridge[:-1] & ridge[1:]),
            _touching_pairs(
                nodes[:, :-1],
                nodes[:, 1:],
                free[:, :-1] | free[:, 1:] | ridge[:, :-1] & ridge[:, 1:],
            ),
        ],
        axis=1,
    )
    n = first + int(areas.max()) + 1
    graph = coo_matrix((np.ones(links.shape[1]), (links[0], links[1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    group = (group + 1).astype(np.int32)
    group[0] = 0  # node 0 (no parcel) is alone in its group
    return group[nodes]


def border_evidence(labels: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, ...]:
    """The borders between parcels of ``labels`` and the boundary found along them: for each
    pair of labels (a < b) with 4-adjacent pixels, the number of such pixel pairs and the sum of
    the higher boundary level (0..255) of each pair. Sums over windows that share no pixel pair
    add up to the whole raster's."""
    a = np.concatenate([labels[:-1].ravel(), labels[:, :-1].ravel()])
    b = np.concatenate([labels[1:].ravel(), labels[:, 1:].ravel()])
    level = np.concatenate([np.maximum(boundary[:-1], boundary[1:]).ravel(),
                            np.maximum(boundary[:, :-1], boundary[:, 1:]).ravel()])  # fmt: skip
    between = (a > 0) & (b > 0) & (a != b)
    return pair_sums(a[between], b[between], level[between].astype(np.float64))


def pair_sums(a: np.ndarray, b: np.ndarray, level: np.ndarray, count=None) -> tuple:
    """(first, second, pixel pairs, summed level) per unordered pair of ``a`` and ``b`` (first <
    second), from one entry per pixel pair (``count`` 1) or per partial sum."""
    first, second = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    count = np.ones(len(first)) if count is None else np.asarray(count, np.float64)
    if not len(first):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    pairs, index = np.unique(np.stack([first, second]), axis=1, return_inverse=True)
    index = index.ravel()
    return (pairs[0], pairs[1], np.bincount(index, count), np.bincount(index, level))


def weak_border_groups(borders: tuple, join: int, n: int) -> tuple[int, np.ndarray]:
    """The number of groups and the group of each of ``n`` parcels once those whose border
    (first, second, pixel pairs, summed level: :func:`pair_sums`) carries a mean boundary level
    under ``join`` (0..255) are one."""
    first, second, count, total = borders
    weak = total < join * count
    graph = coo_matrix((np.ones(weak.sum()), (first[weak], second[weak])), shape=(n, n))
    return connected_components(graph, directed=False)


def join_weak_borders(labels: np.ndarray, boundary: np.ndarray, join: int) -> np.ndarray:
    """``labels`` with the parcels joined whose border's mean boundary level is under ``join``
    (0..255): a few gaps do not join two fields that a boundary mostly separates, and one
    field with two peaks and no boundary between them is one parcel."""
    borders = border_evidence(labels, as_levels(boundary))
    _, group = weak_border_groups(borders, join, int(labels.max()) + 1)
    group = (group + 1).astype(np.int32)
    group[0] = 0
    return group[labels]


def _touching_pairs(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(2, n) nodes of neighbouring pixels ``a`` and ``b``, both > 0, that differ ``where``."""
    touch = where & (a > 0) & (b > 0) & (a != b)
    return np.stack([a[touch], b[touch]])


def instance_labels_from_masks(
    extent_mask: np.ndarray, boundary_mask: np.ndarray | None, valid: np.ndarray | None = None
) -> np.ndarray:
    """True parcels of a chip from its 0/1 masks: 4-connected areas of extent and not
    boundary, each boundary pixel of the extent given to the nearest one (int32 labels)."""
    field = np.asarray(extent_mask) == 1
    if valid is not None:
        field &= np.asarray(valid, bool)
    inside = field if boundary_mask is None else field & (np.asarray(boundary_mask) != 1)
    labels = region_labels(inside)
    if not labels.any() or (inside == field).all():
        return labels
    _, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[nearest[0], nearest[1]]
    return np.where(field, grown, 0).astype(np.int32)
