"""Benchmark the parcel join: ``vectorize --mode parcels`` with and without split and join.

The join weighs the boundary along the whole border of two parcels, so a parcel waits until
every parcel it borders is whole (its borders summed over all their blocks), where the plain
delineation writes a parcel as soon as the blocks around it are in. This script measures what
that costs: wall time, CPU time and peak memory (RSS) of a fresh process vectorising a
generated prediction raster (extent, boundary and distance bands, the tags ``geoseg predict``
writes) of fields 20-60 px across, 10 % of them not field, one shared edge in five drawn over
two thirds of its length only, at each size, with the delineation off (split 0, join 0) and on
(split 0.1, join 0.5).

Run ``.venv/bin/python benchmarks/bench_join.py [--sizes 2048 4096 8192]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from bench_vectorize import timed
from scenes import write_by_blocks
from scipy import ndimage

from geoseg.contracts import Delineation, PredictionTags

TARGETS = {
    "parcels": {"kind": "class", "role": "extent"},
    "boundary": {"kind": "class", "role": "boundary"},
    "distance": {"kind": "regression", "role": "distance"},
}
OFF = Delineation(extent=0.5, boundary=0.5, marker=0.3)
ON = OFF.replace(split=0.1, join=0.5)


def field_block(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Extent, boundary and distance (uint8, 3 x h x w) of a block of jittered grid fields."""
    rows = np.cumsum(rng.integers(20, 61, height // 20 + 2))
    cols = np.cumsum(rng.integers(20, 61, width // 20 + 2))
    r = np.searchsorted(rows, np.arange(height), side="right")
    c = np.searchsorted(cols, np.arange(width), side="right")
    cells = r[:, None] * (len(cols) + 1) + c[None, :] + 1
    edge = np.zeros((height, width), bool)
    edge[1:] |= cells[1:] != cells[:-1]
    edge[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    edge = ndimage.binary_dilation(edge)
    faint = rng.random(cells.max() + 1) < 0.2  # these fields' edges are drawn in part only
    missed = faint[cells] & (np.arange(width)[None, :] % 60 < 20)
    boundary = np.where(edge & ~missed, 230, 0)
    field = rng.random(cells.max() + 1) >= 0.1
    edt = ndimage.distance_transform_edt(~edge)
    largest = ndimage.maximum(edt, cells, np.arange(cells.max() + 1))
    distance = np.where(field[cells], edt / np.maximum(largest[cells], 1), 0) * 255
    extent = np.where(field[cells], 230, 20)
    return np.stack([extent, boundary, distance]).astype(np.uint8)


def prediction(path: Path, size: int) -> Path:
    write_by_blocks(path, size, 3, field_block, block=1000)
    with rasterio.open(path, "r+") as dst:
        for band, name in enumerate(TARGETS, start=1):
            dst.set_band_description(band, name)
        dst.update_tags(**PredictionTags(tuple(TARGETS), targets=TARGETS).to_tags())
    return path


RUN = """
import sys
from geoseg.delineation.vectorizing import vectorize

raster, out = sys.argv[1:]
summary = vectorize(raster, out, mode="parcels", overwrite=True)
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
print(summary.polygons, peak)
"""


def with_delineation(path: Path, thresholds: Delineation) -> None:
    tags = PredictionTags.read(str(path))
    tags = PredictionTags(tags.classes, targets=TARGETS, delineation=thresholds.to_dict())
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**tags.to_tags())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    args = parser.parse_args()
    print("vectorize --mode parcels, a fresh process each; split 0.1 join 0.5 against both off")
    print(f"{'size':>6} {'variant':>8} {'parcels':>8} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            raster = prediction(Path(tmp) / f"p{size}.tif", size)
            for name, thresholds in (("off", OFF), ("on", ON)):
                with_delineation(raster, thresholds)
                out = Path(tmp) / f"p{size}-{name}.gpkg"
                wall, cpu, stdout = timed([sys.executable, "-c", RUN, str(raster), str(out)])
                polygons, peak = (int(v) for v in stdout.split()[-2:])
                print(f"{size:6d} {name:>8} {polygons:8d} {wall:8.1f} {cpu:8.1f} "
                      f"{peak / 1024:9.0f}", flush=True)  # fmt: skip
            raster.unlink()


if __name__ == "__main__":
    main()
