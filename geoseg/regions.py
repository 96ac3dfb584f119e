"""Connected regions of a raster window, as label images: per-class regions or parcels.

Labels are computed on a window with a halo around a block. Label numbers mean nothing outside
their window; the pixels a label covers in the block, and which neighbouring pixels share a label,
do not depend on where the window is, which is what the merge across blocks relies on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
