"""Benchmark ``geoseg vectorize`` against one ``rasterio.features.shapes`` pass over the mask.

The baseline reads the whole mask into memory and polygonises it in one call (it neither merges
across blocks nor scales past memory); ``geoseg vectorize`` works by blocks in parallel and merges
the polygons on block borders. Both run in this process on the same GeoTIFF, and the script
checks that they produce the same polygons (count and total area). Figures: seconds, speed ratio
(baseline time / geoseg time) and seconds per megapixel for each size (linear growth shows as a
constant).

A second table gives the peak memory (RSS) of ``geoseg vectorize`` at each size, each run in a
fresh child process: with threads (as below 16 Mpx) and with the default (processes from
16 Mpx); for the latter also the largest worker process. Flat figures show that what a run holds
does not grow with the raster (only the polygons on block borders and two label lines per block
edge are kept to the end).

Run ``.venv/bin/python benchmarks/bench_vectorize.py`` (``make bench``: 5000, 7071 and 10 000 px,
the last with about 460 000 regions); ``--size`` scales them, ``--tables`` picks the tables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely
from scenes import write_by_blocks
from scipy import ndimage


def make_mask(path: Path, size: int) -> Path:
    """A 0/255 mask of blobs (about one 4-connected region per 200 px), named ``building``."""

    def blobs(rng, h, w):
        smooth = ndimage.gaussian_filter(rng.random((h, w)), 2.0)
        return np.where(smooth > 0.53, 255, 0).astype(np.uint8)[None]

    from geoseg.contracts import PredictionTags

    write_by_blocks(path, size, 1, blobs, block=1000)
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "building")
        dst.update_tags(**PredictionTags(("building",)).to_tags())
    return path


def baseline(path: Path) -> tuple[float, int, float]:
    """One shapes() pass over the whole mask read into memory: seconds (read and pass only),
    polygon count, total area."""
    from geoseg.vectorizing import polygons_from_geojson

    start = time.perf_counter()
    with rasterio.open(path) as src:
        mask = src.read(1)
        transform = src.transform
    found = list(rasterio.features.shapes(mask, mask=mask > 0, transform=transform))
    seconds = time.perf_counter() - start
    polygons = polygons_from_geojson([geom for geom, _ in found])
    return seconds, len(polygons), float(shapely.area(polygons).sum())


def geoseg_run(path: Path, out: Path, block_size: int) -> tuple[float, int, float]:
    from geoseg.vectorizing import vectorize

    start = time.perf_counter()
    summary = vectorize(path, out, block_size=block_size, overwrite=True)
    seconds = time.perf_counter() - start
    areas = pyogrio.read_dataframe(out, columns=["area"], read_geometry=False)["area"]
    return seconds, summary.polygons, float(areas.sum())


PEAK_RSS = """
import glob, sys, threading
import geoseg.vectorizing


def high_water_kib(pid="self"):  # VmHWM: unlike ru_maxrss, not inherited from the parent
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def sample_workers(peaks, stop):
    while not stop.wait(0.05):
        for listing in glob.glob("/proc/self/task/*/children"):
            try:
                pids = open(listing).read().split()
            except OSError:
                continue
            for pid in pids:
                peaks[pid] = max(peaks.get(pid, 0), high_water_kib(pid))


raster, out, block_size, how = sys.argv[1:]
if how == "threads":
    geoseg.vectorizing.PROCESS_PIXELS = float("inf")
start, peaks, stop = high_water_kib(), {}, threading.Event()
sampler = threading.Thread(target=sample_workers, args=(peaks, stop))
sampler.start()
geoseg.vectorizing.vectorize(raster, out, block_size=int(block_size), overwrite=True)
stop.set()
sampler.join()
print(start, high_water_kib(), max(peaks.values(), default=0))
"""


def peak_rss(path: Path, out: Path, block_size: int, how: str) -> tuple[float, float, float]:
    """MiB of RSS in a fresh process running ``vectorize``: after the imports, at its peak, and
    the largest worker process's peak (0 with threads). ``how`` is "threads" or "default"."""
    args = [sys.executable, "-c", PEAK_RSS, str(path), str(out), str(block_size), how]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    start, peak, workers = (int(k) / 1024 for k in done.stdout.split()[-3:])
    return start, peak, workers


def speed_table(path: Path, size: int, out: Path, block_size: int) -> None:
    """One row of the speed table: shapes() pass against ``geoseg vectorize``."""
    base_s, base_n, base_area = baseline(path)
    ours_s, ours_n, ours_area = geoseg_run(path, out, block_size)
    same = base_n == ours_n and abs(base_area - ours_area) <= 1e-6 * base_area
    print(f"{size:6d} {base_n:9d} {base_s:9.1f} {ours_s:9.1f} {base_s / ours_s:6.2f} "
          f"{ours_s / (size * size / 1e6):12.3f}  {same}", flush=True)  # fmt: skip


def memory_table(path: Path, size: int, out: Path, block_size: int) -> None:
    """One row of the memory table: peak RSS with threads and with the default."""
    from geoseg.vectorizing import PROCESS_PIXELS

    threads = peak_rss(path, out, block_size, "threads")
    default = peak_rss(path, out, block_size, "default")
    how = "processes" if size * size >= PROCESS_PIXELS else "threads"
    print(f"{size:6d} {threads[0]:10.0f} {threads[1]:12.0f} {how:>10} {default[1]:12.0f} "
          f"{default[2]:12.0f}", flush=True)  # fmt: skip


TITLES = {
    "speed": "seconds, both in this process",
    "memory": "peak RSS of a fresh process (MiB), with threads and with the default",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=int,
        default=10_000,
        help="largest mask side (px); also runs 1/4 and 1/2 of its pixels",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="mask sides instead of --size")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument(
        "--tables", nargs="+", choices=["speed", "memory"], default=["speed", "memory"]
    )
    args = parser.parse_args()
    args.sizes = args.sizes or [round(args.size * f) for f in (0.5, 0.5**0.5, 1.0)]
    print(f"{os.cpu_count()} cores; geoseg vectorize --block-size {args.block_size}, all cores")
    headers = {
        "speed": f"{'size':>6} {'regions':>9} {'shapes s':>9} {'geoseg s':>9} {'ratio':>6} "
        f"{'geoseg s/MPx':>12}  same polygons",
        "memory": f"{'size':>6} {'import MiB':>10} {'threads MiB':>12} {'default':>10} "
        f"{'default MiB':>12} {'worker MiB':>12}",
    }
    rows = {"speed": speed_table, "memory": memory_table}
    with tempfile.TemporaryDirectory(prefix="bench-vectorize-") as tmp:
        masks = {size: make_mask(Path(tmp) / f"mask{size}.tif", size) for size in args.sizes}
        for table in args.tables:
            print(f"\n{table}: " + TITLES[table])
            print(headers[table])
            for size, path in masks.items():
                rows[table](path, size, Path(tmp) / "v.gpkg", args.block_size)


if __name__ == "__main__":
    main()
