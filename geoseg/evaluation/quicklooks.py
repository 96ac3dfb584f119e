"""A PNG preview of a prediction: the image, the probabilities as a colour overlay, outlines.

A class map is shown in the colours of its colour table, with a legend of its classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from geoseg.contracts import CLASS_MAP_NODATA, ClassMapTags, PredictionTags, is_class_map
from geoseg.errors import ParameterError
from geoseg.io.cog import class_colormap
from geoseg.io.outputs import check_apart, check_output
from geoseg.io.raster import open_raster_info

CLASS_ALPHA = 0.7
"""Opacity of the classes over the image; background shows at a third of it."""


def quicklook(
    prediction: str | Path,
    out: str | Path,
    *,
    image: str | Path | None = None,
    vectors: str | Path | None = None,
    class_name: str | None = None,
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write ``out`` (PNG): ``image`` (if given) under the probabilities of ``class_name``
    (default: the last band) and the outlines of the polygons in ``vectors``. A class map
    (``geoseg predict --class-map``) shows every class in its colour table's colours.

    Everything is read decimated to at most ``max_size`` pixels a side (from the COG's
    overviews), so any raster size previews in little memory and time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_apart([out], [prediction, image, vectors])
    out = check_output(out, overwrite)
    info = open_raster_info(prediction)
    scale = max(info.width, info.height) / max_size
    shape = (max(1, round(info.height / scale)), max(1, round(info.width / scale)))
    if is_class_map(prediction):
        if class_name is not None:
            raise ParameterError(f"`class` does not apply to the class map {prediction}")
        overlay, legend = _class_overlay(prediction, shape, image is not None)
    else:
        overlay, legend = _probability_overlay(prediction, class_name, shape, image), []
    left, bottom, right, top = info.bounds
    figure = plt.figure(figsize=(shape[1] / 100, shape[0] / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    extent = (left, right, bottom, top)
    if image is not None:
        axes.imshow(_display_image(image, info, shape), extent=extent, interpolation="nearest")
    axes.imshow(overlay, extent=extent, interpolation="nearest")
    if vectors is not None:
        from geoseg.io.vector_files import read_polygons

        polygons = read_polygons(vectors).to_crs(info.crs)
        polygons.boundary.plot(ax=axes, color="cyan", linewidth=0.8)
    if legend:
        axes.legend(handles=legend, loc="lower right", fontsize="small", framealpha=0.8)
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)
    staging = out.parent / f".{out.name}.partial.png"
    try:
        figure.savefig(staging, dpi=100, format="png")
        os.replace(staging, out)
    finally:
        plt.close(figure)
        staging.unlink(missing_ok=True)
    return out


def _probability_overlay(prediction, class_name, shape, image) -> np.ndarray:
    """RGBA (h, w, 4) of one class's probabilities in magma, transparent where nodata."""
    import matplotlib.pyplot as plt

    names = list(PredictionTags.read(prediction).classes)
    name = class_name or names[-1]
    if name not in names:
        raise ParameterError(f"`class` {name!r} is not in {prediction} ({', '.join(names)})")
    with rasterio.open(prediction) as src:
        band = names.index(name) + 1
        probability = src.read(band, out_shape=shape, resampling=Resampling.average) / 255.0
        valid = src.dataset_mask(out_shape=shape) > 0
    overlay = plt.get_cmap("magma")(probability)
    overlay[..., 3] = np.where(valid, 0.75 * probability, 0.0) if image else valid * 1.0
    return overlay


def _class_overlay(prediction, shape, over_image: bool) -> tuple[np.ndarray, list]:
    """RGBA (h, w, 4) of a class map in its colour table, and legend entries per class."""
    from matplotlib.patches import Patch

    classes = ClassMapTags.read(prediction).classes
    with rasterio.open(prediction) as src:
        codes = src.read(1, out_shape=shape, resampling=Resampling.mode)
        try:
            table = src.colormap(1)
        except ValueError:  # no colour table: the one predict writes
            table = class_colormap(len(classes), CLASS_MAP_NODATA)
    colours = np.zeros((256, 4))
    for code, rgba in table.items():
        colours[code] = np.asarray(rgba) / 255.0
    overlay = colours[codes]
    if over_image:  # the image shows through, most where the class is background
        overlay[..., 3] *= np.where(codes == 0, CLASS_ALPHA / 3, CLASS_ALPHA)
    legend = [Patch(color=colours[code][:3], label=name) for code, name in enumerate(classes)]
    return overlay, legend


def _display_image(path, info, shape) -> np.ndarray:
    """The image over the prediction's extent as RGB in 0..1, stretched from 2 to 98 %."""
    with rasterio.open(path) as src:
        if src.crs != info.crs:
            raise ParameterError(f"{path}: image CRS differs from the prediction's")
        window = from_bounds(*info.bounds, transform=src.transform)
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        data = src.read(bands, window=window, out_shape=(3, *shape), boundless=True,
                        resampling=Resampling.average).astype(np.float32)  # fmt: skip
    low, high = np.percentile(data, [2, 98], axis=(1, 2), keepdims=True)
    return np.moveaxis(np.clip((data - low) / np.maximum(high - low, 1e-6), 0, 1), 0, -1)
