"""Checks shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from click.testing import CliRunner

from geoseg.cli import main
from geoseg.contracts import PredictionTags


def mask_agreement(chips_dir: Path, truth, band: int = 1) -> tuple[float, int]:
    """Share of labelled mask pixels that equal "pixel centre inside ``truth``", and their count.

    ``truth`` is a shapely geometry in the chips' CRS; the check does not use GDAL's rasteriser.
    """
    agree = total = 0
    for record in gpd.read_file(chips_dir / "chips.gpkg").itertuples():
        with rasterio.open(chips_dir / record.mask) as chip:
            mask, transform = chip.read(band), chip.transform
        rows, cols = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
        xs, ys = transform @ (cols + 0.5, rows + 0.5)
        expected = shapely.contains_xy(truth, xs, ys)
        labelled = mask != 255
        agree += int((mask[labelled] == expected[labelled]).sum())
        total += int(labelled.sum())
    return agree / max(total, 1), total


def run(*args):
    """Invoke the ``geoseg`` command line in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words):
    """A non-zero exit and one ``Error:`` line (click adds its usage lines to usage errors)."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line]
    extra = [line for line in lines[:-1] if not line.startswith(("Usage:", "Try "))]
    assert lines[-1].startswith("Error:") and not extra, result.output
    for word in words:
        assert word in lines[-1], lines[-1]


def tag_prediction(path, names, thresholds=None):
    """Band descriptions and the tags ``geoseg predict`` writes."""
    with rasterio.open(path, "r+") as dst:
        for band, name in enumerate(names, start=1):
            dst.set_band_description(band, name)
        dst.update_tags(**PredictionTags(tuple(names), thresholds or {}).to_tags())
    return path
