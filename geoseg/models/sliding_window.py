"""A model run over an image of any size by overlapping chips, blended with a smooth window.

The chip positions depend on the image's size only, so that every block of a large raster and
an in-memory image of the same size get the same chips (:mod:`geoseg.inference.predictor`,
:mod:`geoseg.training.parcel_areas`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WEIGHT_FLOOR = 1e-3
"""Smallest blending weight, so that pixels seen only by chip edges still get a value."""


@dataclass(frozen=True)
class ChipGrid:
    """Chips of ``size`` every ``size - overlap`` pixels, starting half an overlap before 0."""

    size: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def origins(self, length: int) -> np.ndarray:
        """Chip origins along an axis of ``length`` pixels, covering all of it."""
        start = -(self.overlap // 2)
        count = max(1, math.ceil((length - start - self.size) / self.stride) + 1)
        return start + self.stride * np.arange(count)

    def touching(self, length: int, begin: int, end: int) -> np.ndarray:
        """Origins of the chips that overlap pixels ``begin .. end - 1``."""
        origins = self.origins(length)
        return origins[(origins < end) & (origins + self.size > begin)]


def blend_window(size: int) -> np.ndarray:
    """A (size, size) float32 weight: squared sine in each direction, floored above zero."""
    ramp = np.maximum(np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2, WEIGHT_FLOOR)
    return np.outer(ramp, ramp).astype(np.float32)


def blend_chips(
    image: np.ndarray,
    origins: Sequence[tuple[int, int]],
    size: int,
    forward,
    batch_size: int,
    classes: int,
    region: tuple[int, int, int, int],
) -> np.ndarray:
    """(h, w, classes) float32 blend over ``region`` (top, left, h, w) of ``image`` (H, W, bands)
    of the ``forward`` outputs of the chips of ``size`` px at ``origins`` (rows, cols; every
    chip inside ``image``), weighted by :func:`blend_window`."""
    top, left, height, width = region
    bottom, right = top + height, left + width
    weight = blend_window(size)
    total = np.zeros((height, width, classes), np.float32)
    weights = np.zeros((height, width), np.float32)
    for start in range(0, len(origins), batch_size):
        batch = origins[start : start + batch_size]
        chips = np.stack([image[r : r + size, c : c + size] for r, c in batch])
        outputs = forward(chips)
        for (r, c), output in zip(batch, outputs):
            y0, y1 = max(r, top), min(r + size, bottom)
            x0, x1 = max(c, left), min(c + size, right)
            w = weight[y0 - r : y1 - r, x0 - c : x1 - c]
            total[y0 - top : y1 - top, x0 - left : x1 - left] += (
                w[..., None] * output[y0 - r : y1 - r, x0 - c : x1 - c]
            )
            weights[y0 - top : y1 - top, x0 - left : x1 - left] += w
    return total / np.maximum(weights, 1e-12)[..., None]


def predict_array(
    image: np.ndarray, valid: np.ndarray, grid: ChipGrid, forward, batch_size: int, classes: int
) -> np.ndarray:
    """(h, w, classes) probabilities of a normalised in-memory image (h, w, bands), its chips
    laid on ``grid`` and blended as :func:`predict` does on a raster of that size."""
    height, width = valid.shape
    size = grid.size
    rows, cols = grid.origins(height), grid.origins(width)
    top, left = int(-rows[0]), int(-cols[0])
    pads = ((top, int(rows[-1]) + size - height), (left, int(cols[-1]) + size - width))
    padded, padded_valid = np.pad(image, (*pads, (0, 0))), np.pad(valid, pads)
    origins = [
        (int(r) + top, int(c) + left)
        for r in rows
        for c in cols
        if padded_valid[r + top : r + top + size, c + left : c + left + size].any()
    ]
    region = (top, left, height, width)
    return blend_chips(padded, origins, size, forward, batch_size, classes, region)
