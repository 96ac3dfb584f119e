"""Scores of a prediction against ground truth: pixels, boundaries within a tolerance, objects.

A probability raster (``geoseg predict``) is scored block by block against vector or raster truth
burned on its grid (reprojected as in ``geoseg tile``): per-class IoU, F1, precision and recall,
and for the ``boundary`` class an F1 that counts a boundary pixel as found when the other side has
one within the tolerance. A GeoPackage (``geoseg vectorize``) is scored per object: predicted and
true polygons are matched one to one at IoU >= 0.5 (as in SpaceNet).

A class map (or multiclass probabilities, each pixel in its likeliest class) is scored in one
confusion matrix of its classes, background included: per-class IoU, F1, precision and recall
and the mean IoU over the foreground classes.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from dask import delayed
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from scipy import ndimage

from geoseg.contracts import (
    CLASS_COLUMN,
    ClassMapTags,
    PolygonMetadata,
    PredictionTags,
    is_class_map,
)
from geoseg.delineation.regions import disk
from geoseg.errors import (
    InputFileError,
    LabelsError,
    NotAPredictionError,
    ParameterError,
    first_line,
)
from geoseg.io.outputs import check_apart, check_output, write_text_atomically
from geoseg.io.raster import block_windows, open_raster, open_raster_info, read_padded
from geoseg.io.remote import is_gdal_path, local_file_missing
from geoseg.labels.masks import (
    BOUNDARY,
    FILE_NODATA,
    IGNORE,
    LabelSpec,
    Length,
    ignored_background,
    is_raster_path,
    open_labels,
    parse_label_nodata,
    vector_layer,
)
from geoseg.metrics.scores import ConfusionMatrix, resolve_thresholds, scores
from geoseg.parallel import Progress, compute_each

logger = logging.getLogger(__name__)

MATCH_IOU = 0.5


@dataclass
class Evaluation:
    """Scores by class: ``pixels``, ``boundary`` (tolerant F1) and ``objects``; plus notes.

    A class map's also has ``confusion``: :meth:`ConfusionMatrix.to_json` (classes, matrix with
    rows = truth and columns = prediction, per-class scores, mean IoU, pixel accuracy).
    """

    prediction: str
    truth: str
    pixels: dict = field(default_factory=dict)
    boundary: dict = field(default_factory=dict)
    objects: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    confusion: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        record = {
            "prediction": self.prediction,
            "truth": self.truth,
            "pixels": self.pixels,
            "boundary": self.boundary,
            "objects": self.objects,
            "notes": self.notes,
        }
        if self.confusion:
            record["confusion"] = self.confusion
        return record

    def describe(self) -> str:
        lines = [*self.notes]
        if self.pixels:
            lines.append(f"{'pixels':<16}{'iou':>8}{'f1':>8}{'precision':>11}{'recall':>8}")
            for name, s in self.pixels.items():
                lines.append(
                    f"{name:<16}{s['iou']:8.3f}{s['f1']:8.3f}{s['precision']:11.3f}"
                    f"{s['recall']:8.3f}"
                )
        if self.boundary:
            b = self.boundary
            lines.append(
                f"boundary F1 within {b['tolerance_px']:g} px: {b['f1']:.3f} "
                f"(precision {b['precision']:.3f}, recall {b['recall']:.3f})"
            )
        if self.objects:
            lines.append(f"{'objects':<16}{'pred':>7}{'true':>7}{'match':>7}{'f1':>8}"
                         f"{'precision':>11}{'recall':>8}")  # fmt: skip
            for name, s in self.objects.items():
                lines.append(
                    f"{name:<16}{s['predicted']:7d}{s['true']:7d}{s['matched']:7d}{s['f1']:8.3f}"
                    f"{s['precision']:11.3f}{s['recall']:8.3f}"
                )
        if self.confusion:
            lines += confusion_table(self.confusion)
        return "\n".join(lines)


def confusion_table(confusion: dict) -> list[str]:
    """Lines for a terminal: mean IoU, pixel accuracy and the matrix (rows: truth)."""
    names = [name[:12] for name in confusion["classes"]]
    width = max(8, *(len(n) + 2 for n in names), *(len(f"{v:,}") + 2 for row in
                confusion["matrix"] for v in row))  # fmt: skip
    lines = [
        f"mean IoU over the foreground classes: {confusion['mean_iou']:.3f}; "
        f"pixel accuracy {confusion['pixel_accuracy']:.3f}",
        "confusion matrix (pixels; rows: truth, columns: prediction)",
        f"{'':<14}" + "".join(f"{n:>{width}}" for n in names),
    ]
    for name, row in zip(names, confusion["matrix"]):
        lines.append(f"{name:<14}" + "".join(f"{v:>{width},}" for v in row))
    return lines


def evaluate(
    prediction: str | Path,
    truth: str | Path,
    *,
    class_field: str | None = None,
    boundary_tolerance: str | Length = "2px",
    boundary_width: str | Length = "1px",
    threshold: float | None = None,
    classes: Sequence[str] | None = None,
    block_size: int = 2048,
    json_out: str | Path | None = None,
    overwrite: bool = False,
    label_nodata: float | str | None = FILE_NODATA,
    truth_layer: str | None = None,
    sparse_truth: str | Length | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Score ``prediction`` (a probability GeoTIFF or a polygon GeoPackage) against ``truth``.

    ``truth`` is a vector file (any CRS; ``class_field`` names the class attribute) or a label
    raster (any grid; resampled to the prediction's with nearest neighbour). Boundary truth is
    burned from polygon outlines ``boundary_width`` wide; ``boundary_tolerance`` is the distance
    within which a boundary pixel counts as found. ``truth_layer`` names the layer of a vector
    file of several (one is never picked silently). ``classes`` limits the scores to these
    prediction classes. Writes the scores as JSON to ``json_out`` (an existing file only with
    ``overwrite``, never one of the inputs).

    ``sparse_truth`` (polygons only): the truth draws some objects among many (a few fields
    of a region), so a predicted object lying mostly farther than this length (CRS units, or
    ``3px`` of the raster the polygons came from) from every true one is not scored: it may
    be an undrawn field, neither right nor wrong. Recall is unchanged; precision is that of the
    objects near the drawn ones.

    A class map or multiclass probabilities are scored against vector truth, whose
    ``class_field`` values name the classes (pixels in no truth polygon, or in one of another
    class, are background; only pixels inside the truth's bounding box count), or against a
    label raster (its nodata and the pixels beyond it not scored): a geoseg class map, matched
    by class name; values K when every class is named ``K`` or ``class_K`` (other values are
    background); else class codes 0 (background) .. N in the prediction's class order.
    """
    for path in (prediction, truth):
        if local_file_missing(path):
            raise InputFileError(f"{path}: no such file")
    from geoseg.io.vector_files import is_parquet  # Arrow only where polygons are read

    vector_truth = not (is_raster_path(truth) or is_gdal_path(str(truth)) or is_parquet(truth))
    if vector_truth:  # several layers need one named, never the first one silently
        vector_layer(str(truth), truth_layer)
    elif truth_layer is not None:
        raise ParameterError(f"`truth_layer` applies to a vector file of layers, not {truth}")
    if json_out is not None:
        check_apart([json_out], [prediction, truth])
        check_output(json_out, overwrite)
    label_nodata = parse_label_nodata(label_nodata)
    if label_nodata != FILE_NODATA and not is_raster_path(truth):
        raise ParameterError("`label_nodata` applies to a truth raster, not vector truth")
    if sparse_truth is not None and is_raster_path(prediction):
        raise ParameterError(
            "`sparse_truth` scores objects: give the polygons of the prediction, not a raster"
        )
    source = _class_source(prediction)
    if source is not None:
        if label_nodata != FILE_NODATA:
            raise ParameterError("`label_nodata` applies to probabilities, not a class map")
        _check_class_options(prediction, threshold, classes)
        result = _evaluate_classes(str(prediction), source, str(truth), class_field, block_size,
                                   workers, scheduler, progress, truth_layer)  # fmt: skip
    elif is_raster_path(prediction):
        result = _evaluate_raster(
            str(prediction), str(truth), class_field, _length(boundary_tolerance),
            _length(boundary_width), threshold, classes, block_size, workers, scheduler, progress,
            label_nodata, truth_layer,
        )  # fmt: skip
    else:
        reach = None if sparse_truth is None else _length(sparse_truth)
        result = _evaluate_polygons(str(prediction), str(truth), class_field, classes, truth_layer,
                                    reach)  # fmt: skip
    if json_out is not None:
        write_text_atomically(json_out, json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _class_source(prediction):
    """The classes of a class map or multiclass probabilities; None for anything else."""
    from geoseg.delineation.vectorizing import class_source

    if not is_raster_path(prediction):
        return None
    return class_source(prediction)


def _check_class_options(prediction, threshold, classes) -> None:
    if threshold is not None:
        raise ParameterError(f"`threshold` does not apply to {prediction}: its classes exclude "
                             "each other, each pixel is in its likeliest one")  # fmt: skip
    if classes:
        raise ParameterError(f"`classes` does not apply to {prediction}: all its classes are "
                             "scored together in one confusion matrix")  # fmt: skip


def _length(value: str | Length) -> Length:
    return value if isinstance(value, Length) else Length.parse(str(value))


@dataclass(frozen=True)
class _RasterJob:
    prediction: str
    labels: LabelSpec
    bands: tuple[int, ...]  # prediction bands scored, 1-based
    truth_index: tuple[int, ...]  # the truth class of each
    levels: tuple[int, ...]
    boundary: int | None  # position in ``bands`` of the boundary class
    tolerance_px: int
    halo: int


def _evaluate_raster(prediction, truth, class_field, tolerance, width, threshold, chosen,
                     block_size, workers, scheduler, progress,
                     label_nodata=FILE_NODATA, layer=None) -> Evaluation:  # fmt: skip
    from geoseg.delineation.vectorizing import quantized_level

    info = open_raster_info(prediction)
    tags = PredictionTags.read(prediction)
    names, stored = list(tags.classes), tags.thresholds
    thresholds = resolve_thresholds(names, stored, threshold)
    bands_of = {name: band for band, name in enumerate(names, start=1)}
    regression = [n for n in names if tags.targets[n]["kind"] == "regression"]
    names = [n for n in _chosen(names, chosen, prediction) if n not in regression]
    if not names:
        raise ParameterError(f"{prediction}: no class band to score (only {', '.join(regression)})")
    result = Evaluation(prediction, truth)
    width = width if BOUNDARY in names and not is_raster_path(truth) else None
    spec = LabelSpec(truth, class_field=class_field, boundary_width=width, nodata=label_nodata,
                     layer=layer)  # fmt: skip
    labels = _truth_on(info, spec, result.notes)
    pairs = _pair_classes(names, labels, result.notes, class_field)
    tolerance_px = max(0, math.ceil(tolerance.in_crs_units(info.pixel_size) / info.pixel_size))
    job = _RasterJob(
        prediction=prediction,
        labels=spec,
        bands=tuple(bands_of[p] for p, _ in pairs),
        truth_index=tuple(t for _, t in pairs),
        levels=tuple(quantized_level(thresholds[p]) for p, _ in pairs),
        boundary=next((i for i, (p, _) in enumerate(pairs) if p == BOUNDARY), None),
        tolerance_px=tolerance_px,
        halo=tolerance_px + 1,
    )
    windows = block_windows(info.width, info.height, block_size)
    totals = np.zeros((len(pairs), 3), np.int64)
    tolerant = np.zeros(4, np.int64)

    def add(counts):
        nonlocal totals, tolerant
        totals += counts[0]
        tolerant += counts[1]

    tasks = [delayed(_score_block)(job, w) for w in windows]
    scored = ", ".join(p for p, _ in pairs)
    logger.info("scoring %s against %s in %d blocks", scored, truth, len(windows))
    started = time.perf_counter()
    compute_each(tasks, add, workers=workers, scheduler=scheduler, progress=progress)
    logger.info("scored in %.1f s", time.perf_counter() - started)
    result.pixels = {p: scores(*map(int, totals[i])) for i, (p, _) in enumerate(pairs)}
    if job.boundary is not None:
        result.boundary = _tolerant_scores(tolerant, tolerance_px)
    return result


def _truth_on(info, spec: LabelSpec, notes: list[str]):
    """The truth of ``spec`` opened for the prediction ``info`` describes; what it leaves out
    or resamples goes into ``notes``."""
    labels = open_labels(spec)
    why = ignored_background(labels, spec)
    if why:
        notes.append(why)
        logger.warning("%s", why)
    if not labels.overlaps(info.crs, info.bounds):
        raise LabelsError(f"{spec.path}: no truth inside the prediction's extent")
    if is_raster_path(spec.path):
        with open_raster(spec.path) as src:
            same_grid = (src.crs, src.transform, src.shape) == (
                info.crs, info.transform, (info.height, info.width)
            )  # fmt: skip
        if not same_grid:
            notes.append("truth raster resampled to the prediction's grid (nearest)")
    return labels


def _tolerant_scores(tolerant: np.ndarray, tolerance_px: int) -> dict:
    """Boundary precision, recall and F1 within ``tolerance_px`` from the summed counts
    (predicted pixels near a true one, predicted, true pixels near a predicted one, true)."""
    found_predicted, predicted, found_true, true = (int(x) for x in tolerant)
    precision = found_predicted / predicted if predicted else 0.0
    recall = found_true / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tolerance_px": tolerance_px, "precision": precision, "recall": recall, "f1": f1}


@dataclass(frozen=True)
class _ClassJob:
    """What a block task needs to score class codes; small and picklable."""

    prediction: str
    source: object  # a geoseg.delineation.vectorizing.ClassSource
    labels: LabelSpec
    truth_codes: tuple[int, ...]  # the prediction's class code of each truth band
    coverage: tuple[float, float, float, float] | None  # rows and columns scored (vector truth)


def _evaluate_classes(prediction, source, truth, class_field, block_size, workers, scheduler,
                      progress, layer=None) -> Evaluation:  # fmt: skip
    """Confusion matrix of the prediction's class codes against truth codes, block by block."""
    info = open_raster_info(prediction)
    classes = list(source.classes)
    result = Evaluation(prediction, truth)
    if is_raster_path(truth):
        spec, truth_codes = _raster_truth(truth, class_field, classes, result.notes)
    else:
        spec, truth_codes = _vector_truth(truth, class_field, classes, result.notes, layer)
    if not open_labels(spec).overlaps(info.crs, info.bounds):
        raise LabelsError(f"{truth}: no truth inside the prediction's extent")
    # a label raster's nodata and surroundings are ignored as it is burned
    coverage = None if is_raster_path(truth) else _vector_coverage(truth, info, result.notes, layer)
    job = _ClassJob(prediction, source, spec, truth_codes, coverage)
    matrix = ConfusionMatrix(classes)

    def add(counts):
        matrix.counts += counts

    windows = block_windows(info.width, info.height, block_size)
    tasks = [delayed(_confusion_of_block)(job, w) for w in windows]
    logger.info("scoring the classes of %s against %s in %d blocks", prediction, truth,
                len(windows))  # fmt: skip
    started = time.perf_counter()
    compute_each(tasks, add, workers=workers, scheduler=scheduler, progress=progress)
    logger.info("scored in %.1f s", time.perf_counter() - started)
    result.confusion = matrix.to_json()
    result.pixels = result.confusion["per_class"]
    return result


def _raster_truth(truth, class_field, classes, notes) -> tuple[LabelSpec, tuple[int, ...]]:
    """A label raster's spec and the prediction code of each of its values (see evaluate)."""
    if class_field:
        raise ParameterError("`class_field` applies to vector truth, not a label raster")
    spec = LabelSpec(truth)
    values = open_labels(spec).codes  # its distinct values but 0 and nodata, in order
    if is_class_map(truth):
        names = ClassMapTags.read(truth).classes
        truth_names = [names[v] if v < len(names) else None for v in values]
        unknown = sorted({n for n in truth_names if n is not None and n not in classes})
        if unknown:
            notes.append(f"truth classes not in the prediction, scored as background: "
                         f"{', '.join(unknown)}")  # fmt: skip
        return spec, tuple(classes.index(n) if n in classes else 0 for n in truth_names)
    numbers = _class_numbers(classes[1:])
    if numbers is not None:
        code_of = {number: code for code, number in enumerate(numbers, start=1)}
        notes.append("truth raster values read as the numbers in the class names")
        return spec, tuple(code_of.get(v, 0) for v in values)
    beyond = [v for v in values if not 0 <= v < len(classes)]
    if beyond:
        raise LabelsError(
            f"{truth}: value {beyond[0]} is not a class code of the prediction (0 = background "
            f".. {len(classes) - 1}: {', '.join(classes)})"
        )
    return spec, tuple(values)


def _class_numbers(names: list[str]) -> list[int] | None:
    """The number K of every class named ``K`` or ``class_K``; None unless all are."""
    matches = [re.fullmatch(r"(?:class_)?(\d+)", name) for name in names]
    return [int(m.group(1)) for m in matches] if all(matches) else None


def _vector_truth(
    truth, class_field, classes, notes, layer=None
) -> tuple[LabelSpec, tuple[int, ...]]:
    """The truth's spec (classes in the prediction's order, so a later class wins where
    polygons overlap, as in training) and the prediction code of each of its classes."""
    foreground = classes[1:]
    if class_field is None:
        if len(foreground) > 1:
            raise LabelsError(
                f"{truth}: name the attribute that holds the classes ({', '.join(foreground)}) "
                "with `class_field`"
            )
        notes.append(f"every truth polygon scored as class {foreground[0]!r}")
        return LabelSpec(truth, classes=(foreground[0],), layer=layer), (1,)
    values = _field_values(truth, class_field, layer)
    present = [name for name in foreground if name in values]
    if not present:
        shown = ", ".join(sorted(values)[:10])
        raise LabelsError(
            f"{truth}: no value of field {class_field!r} ({shown}) is a class of the "
            f"prediction ({', '.join(foreground)})"
        )
    missing = [name for name in foreground if name not in values]
    if missing:
        notes.append(f"classes without truth polygons: {', '.join(missing)}")
    others = len(values - set(foreground))
    if others:
        notes.append(f"{others} other values of {class_field!r} scored as background")
    spec = LabelSpec(truth, class_field=class_field, classes=tuple(present), layer=layer)
    return spec, tuple(classes.index(name) for name in present)


def _field_values(truth, class_field, layer=None) -> set[str]:
    """The distinct values of a vector file's class field, as the label burner reads them."""
    import pyogrio

    from geoseg.io.vector_files import is_parquet, read_polygons
    from geoseg.labels.masks import category_text

    try:
        if is_parquet(truth):
            frame = read_polygons(truth)
        else:
            frame = pyogrio.read_dataframe(
                truth, layer=layer, columns=[class_field], read_geometry=False
            )
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputFileError(f"{truth}: not a readable vector file ({first_line(exc)})") from None
    if class_field not in frame.columns:
        raise LabelsError(f"{truth}: unknown class field {class_field!r}")
    spec = LabelSpec(truth, class_field=class_field, layer=layer)
    return set(category_text(frame[class_field], spec).dropna())


def _vector_coverage(truth, info, notes, layer=None) -> tuple[int, int, int, int] | None:
    """Rows and columns (first, end) of the prediction whose pixel centres are inside the
    truth's bounding box; None when that is every pixel."""
    import pyogrio

    record = pyogrio.read_info(truth, layer=layer, force_total_bounds=True)
    if record.get("crs") is None:
        raise LabelsError(f"{truth}: labels have no CRS")
    box = transform_bounds(record["crs"], info.crs, *record["total_bounds"], densify_pts=21)
    west, south, east, north = box
    corners = np.array([[west, east, east, west], [south, south, north, north]])
    cols, rows = ~info.transform @ (corners[0], corners[1])
    span = (
        max(0, math.ceil(rows.min() - 0.5)),
        min(info.height, math.floor(rows.max() - 0.5) + 1),
        max(0, math.ceil(cols.min() - 0.5)),
        min(info.width, math.floor(cols.max() - 0.5) + 1),
    )
    if span == (0, info.height, 0, info.width):
        return None
    notes.append("pixels beyond the truth's bounding box not scored")
    return span


def _confusion_of_block(job: _ClassJob, window: Window) -> np.ndarray:
    """The (classes, classes) confusion counts of one block."""
    with open_raster(job.prediction) as src:
        data, valid, _ = read_padded(src, window, list(job.source.bands))
        transform, crs = src.window_transform(window), src.crs
        pixel_size = (abs(transform.a) + abs(transform.e)) / 2
    predicted = job.source.codes(data).astype(np.int64)
    predicted[~valid] = IGNORE
    burned = open_labels(job.labels).burn(crs, transform, data.shape[1:], pixel_size)
    truth = np.zeros(data.shape[1:], np.int64)  # background where no truth class is
    for band, code in zip(burned, job.truth_codes):
        truth[band == 1] = code
    truth[(burned == IGNORE).any(axis=0)] = IGNORE
    if job.coverage is not None:
        truth[~_inside(job.coverage, window)] = IGNORE
    matrix = ConfusionMatrix(job.source.classes)
    matrix.add(truth, predicted)
    return matrix.counts


def _inside(span: tuple[int, int, int, int], window: Window) -> np.ndarray:
    """Boolean (h, w) of the window's pixels in rows and columns ``span`` of the raster."""
    r0, r1, c0, c1 = span
    rows = np.arange(int(window.row_off), int(window.row_off + window.height))
    cols = np.arange(int(window.col_off), int(window.col_off + window.width))
    return ((rows >= r0) & (rows < r1))[:, None] & ((cols >= c0) & (cols < c1))[None, :]


def _chosen(names: list[str], chosen: Sequence[str] | None, source) -> list[str]:
    """The prediction classes to score: ``chosen`` (checked against ``names``) or all."""
    if not chosen:
        return names
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ParameterError(
            f"`classes`: {unknown[0]!r} is not a class of {source} ({', '.join(names)})"
        )
    return [n for n in names if n in chosen]


def _pair_classes(
    names: list[str], labels, notes: list[str], class_field: str | None
) -> list[tuple[str, int]]:
    """(prediction class, truth class index) pairs: by name, or the only class of each."""
    truth = list(labels.classes)
    pairs = [(name, truth.index(name)) for name in names if name in truth]
    plain = [n for n in names if n != BOUNDARY and n not in truth]
    feature_classes = [c for c in truth if c != BOUNDARY]
    if (
        len(plain) == 1
        and len(feature_classes) == 1
        and not any(p == feature_classes[0] for p, _ in pairs)
    ):
        pairs.append((plain[0], truth.index(feature_classes[0])))
        notes.append(f"prediction class {plain[0]!r} scored against truth {feature_classes[0]!r}")
        plain = []
    if plain:
        advice = "choose classes with `classes`" if class_field else "use `class_field`"
        raise LabelsError(
            f"prediction classes {', '.join(plain)} not in the truth ({', '.join(truth)}); {advice}"
        )
    return sorted(pairs, key=lambda pair: names.index(pair[0]))


def _score_block(job: _RasterJob, window: Window):
    """(tp, fp, fn) per scored class and the tolerant boundary counts, for one block."""
    halo = job.halo
    read = Window(window.col_off - halo, window.row_off - halo,
                  window.width + 2 * halo, window.height + 2 * halo)  # fmt: skip
    with open_raster(job.prediction) as src:
        data, valid, _ = read_padded(src, read, list(job.bands))
        transform, crs = src.window_transform(read), src.crs
        pixel_size = (abs(transform.a) + abs(transform.e)) / 2
    truth = open_labels(job.labels).burn(crs, transform, data.shape[1:], pixel_size)
    core = (slice(halo, halo + int(window.height)), slice(halo, halo + int(window.width)))
    counts = np.zeros((len(job.bands), 3), np.int64)
    tolerant = np.zeros(4, np.int64)
    for i, (j, level) in enumerate(zip(job.truth_index, job.levels)):
        labelled = valid & (truth[j] != IGNORE)
        predicted, true = (data[i] >= level) & labelled, (truth[j] == 1) & labelled
        p, t, inside = predicted[core], true[core], labelled[core]
        counts[i] = [(p & t).sum(), (p & ~t & inside).sum(), (~p & t).sum()]
        if i == job.boundary:
            near = disk(job.tolerance_px) if job.tolerance_px else np.ones((1, 1), bool)
            near_true = ndimage.binary_dilation(true, structure=near)[core]
            near_predicted = ndimage.binary_dilation(predicted, structure=near)[core]
            tolerant[:] = [(p & near_true).sum(), p.sum(), (t & near_predicted).sum(), t.sum()]
    return counts, tolerant


def _evaluate_polygons(
    prediction: str,
    truth: str,
    class_field: str | None,
    chosen: Sequence[str] | None,
    layer: str | None = None,
    sparse_reach: Length | None = None,
) -> Evaluation:
    from geoseg.io.vector_files import read_layer_metadata, read_polygons

    try:
        metadata = read_layer_metadata(prediction)
        predicted = read_polygons(prediction)
    except Exception as exc:  # pyogrio and pyarrow raise their own types
        raise InputFileError(f"{prediction}: not a readable vector file ({exc})") from None
    if CLASS_COLUMN not in predicted.columns:
        raise NotAPredictionError(
            f"{prediction}: no '{CLASS_COLUMN}' column: not polygons written by geoseg predict "
            "or vectorize"
        )
    result = Evaluation(prediction, truth)
    try:
        true = read_polygons(truth, **({"layer": layer} if layer else {}))
    except Exception as exc:
        raise InputFileError(f"{truth}: not a readable vector file ({exc})") from None
    if true.crs is None:
        raise LabelsError(f"{truth}: labels have no CRS")
    if class_field and class_field not in true.columns:
        raise LabelsError(f"{truth}: unknown class field {class_field!r}")
    if true.crs != predicted.crs:
        result.notes.append(f"truth reprojected from {true.crs.to_string()} to the prediction's")
        true = true.to_crs(predicted.crs)
    true = true.explode(index_parts=False)
    true = true[true.geom_type == "Polygon"]
    written = PolygonMetadata.from_metadata(metadata)
    if written:  # truth outside the predicted raster was never predicted: leave it out
        true = true[true.intersects(shapely.box(*written.extent))]
    names = _chosen(sorted(set(predicted[CLASS_COLUMN])), chosen, prediction)
    reach = None if sparse_reach is None else _reach(sparse_reach, written, prediction)
    for name, selection in _object_pairs(names, true, class_field, truth, result.notes):
        mine = predicted[predicted[CLASS_COLUMN] == name].geometry.to_numpy()
        if reach is not None:
            mine = _near_truth(mine, true[selection].geometry.to_numpy(), reach, name, result)
        result.objects[name] = match_objects(mine, true[selection].geometry.to_numpy())
        logger.info("%s: %d predicted, %d true objects", name, len(mine), int(selection.sum()))
    return result


def _reach(length: Length, written: PolygonMetadata | None, prediction: str) -> float:
    """``sparse_truth`` in CRS units; pixels are those of the raster the polygons came from."""
    if length.unit != "px":
        return length.value
    try:
        return length.in_crs_units(open_raster_info(written.source).pixel_size)
    except Exception:
        raise ParameterError(
            f"`sparse_truth` {length} is in pixels, but the raster {prediction} was made from "
            "cannot be read; give it in CRS units"
        ) from None


def _near_truth(mine: np.ndarray, theirs: np.ndarray, reach: float, name: str, result):
    """The predicted objects that lie mostly within ``reach`` of a true one; a note says how
    many others were left unscored."""
    labelled = shapely.union_all(shapely.buffer(theirs, reach)) if len(theirs) else None
    if labelled is None:
        near = np.zeros(len(mine), bool)
    else:
        inside = shapely.area(shapely.intersection(mine, labelled))
        near = inside >= 0.5 * shapely.area(mine)
    result.notes.append(
        f"{name}: sparse truth: {int((~near).sum())} of {len(mine)} predicted objects lie mostly "
        f"farther than {reach:g} from every true one and are not scored"
    )
    return mine[near]


def _object_pairs(names, true, class_field, truth, notes) -> list[tuple[str, np.ndarray]]:
    """(prediction class, truth rows) to match as objects: only classes the truth has.

    Parcels match every true polygon; with ``class_field`` other classes match the true
    polygons of the same name; without it the truth is one class named after its file, matched
    by name or, failing that, by the one object class of the prediction. Boundary polygons are
    never objects.
    """
    objects = [n for n in names if n != BOUNDARY]
    everything = np.ones(len(true), bool)
    if class_field:
        values = true[class_field].astype(str).to_numpy()
        pairs = [(n, everything if n == "parcel" else values == n) for n in objects]
        pairs = [(n, rows) for n, rows in pairs if n == "parcel" or rows.any()]
    else:
        stem = Path(truth).stem
        plain = [n for n in objects if n != "parcel"]
        pairs = [(n, everything) for n in objects if n in ("parcel", stem)]
        if not pairs and len(plain) == 1:
            pairs = [(plain[0], everything)]
            notes.append(f"prediction class {plain[0]!r} scored against all of {truth}")
    if not pairs:
        hint = "" if class_field else "; name the truth's class field with `class_field`"
        raise LabelsError(
            f"no prediction class of {', '.join(names) or 'none'} is in the truth {truth}{hint}"
        )
    skipped = sorted(set(names) - {n for n, _ in pairs})
    if skipped:
        notes.append(f"not scored as objects (not in the truth): {', '.join(skipped)}")
    return pairs


def match_objects(predicted: np.ndarray, true: np.ndarray) -> dict:
    """One-to-one matches at IoU >= 0.5: counts, precision, recall and F1."""
    matched = 0
    if len(predicted) and len(true):
        i, j = shapely.STRtree(true).query(predicted, predicate="intersects")
        inter = shapely.area(shapely.intersection(predicted[i], true[j]))
        iou = inter / np.maximum(shapely.area(predicted[i]) + shapely.area(true[j]) - inter, 1e-12)
        used_p, used_t = set(), set()
        for k in np.argsort(-iou):
            if iou[k] < MATCH_IOU:
                break
            if i[k] not in used_p and j[k] not in used_t:
                used_p.add(i[k])
                used_t.add(j[k])
        matched = len(used_p)
    s = scores(matched, len(predicted) - matched, len(true) - matched)
    return {
        "predicted": len(predicted),
        "true": len(true),
        "matched": matched,
        "precision": s["precision"],
        "recall": s["recall"],
        "f1": s["f1"],
    }
