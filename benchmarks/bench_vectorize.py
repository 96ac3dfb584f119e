"""Benchmark ``geoseg vectorize`` against one ``rasterio.features.shapes`` pass over the mask.

Two masks: ``blobs`` (smoothed noise, about one 4-connected region per 200 px) and ``holey``
(the case of issue 16: blobs about 8 px across, smoothed noise at sigma 2 cut near its median,
with 3% of the pixels cleared at random, so most regions have holes and many run across
blocks; about 186 000 regions at 10 000 px).

The speed table runs each command from the command line in a fresh process, as users run it,
alternating them, best of ``--repeat`` runs (wall time and CPU time, user + sys of the process
and its workers):

- ``shapes``: a script that reads the whole mask and runs one ``shapes()`` pass over it,
  taking the GeoJSON mappings (it neither builds geometries, nor merges, nor writes, nor
  scales past memory); the ratio is this time over geoseg's;
- ``shapes+gpkg`` (``--with-gpkg``): the same pass, then what a user writes next: a
  GeoDataFrame from the features, ``to_file`` as GeoPackage with pyogrio's defaults;
- ``geoseg vectorize MASK -o OUT.gpkg`` with its defaults (block 1024, all cores).

The script checks that geoseg wrote the polygons of the pass (count and total area; holes too
with ``--with-gpkg``).

A second table gives the peak memory (RSS) of ``geoseg vectorize`` at each size, each run in a
fresh child process: with threads (as below 16 Mpx) and with the default (processes from
16 Mpx); for the latter also the largest worker process. Flat figures show that what a run holds
does not grow with the raster (the polygons on the borders of blocks still to come and two label
lines per edge of those blocks are held; a region is written once the blocks around it are in).

Run ``.venv/bin/python benchmarks/bench_vectorize.py`` (``make bench``: 5000, 7071 and 10 000 px);
``--size`` scales them, ``--masks`` and ``--tables`` pick what runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from scenes import write_by_blocks
from scipy import ndimage


def _tagged(path: Path) -> Path:
    from geoseg.contracts import PredictionTags

    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "building")
        dst.update_tags(**PredictionTags(("building",)).to_tags())
    return path


def make_mask(path: Path, size: int) -> Path:
    """A 0/255 mask of blobs (about one 4-connected region per 200 px), named ``building``."""

    def blobs(rng, h, w):
        smooth = ndimage.gaussian_filter(rng.random((h, w)), 2.0)
        return np.where(smooth > 0.53, 255, 0).astype(np.uint8)[None]

    return _tagged(write_by_blocks(path, size, 1, blobs, block=1000))


def make_holey_mask(path: Path, size: int) -> Path:
    """A 0/255 mask of blobs about 8 px across (noise smoothed at sigma 2, cut just above its
    median, so many regions are long and cross blocks) with 3% of the pixels cleared at random
    (holes): about 186 000 regions at 10 000 px."""

    def blobs(rng, h, w):
        smooth = ndimage.gaussian_filter(rng.random((h, w)), 2.0)
        holes = rng.random((h, w)) < 0.03
        return np.where((smooth > 0.504) & ~holes, 255, 0).astype(np.uint8)[None]

    return _tagged(write_by_blocks(path, size, 1, blobs, block=1000))


MASKS = {"holey": make_holey_mask, "blobs": make_mask}

SHAPES = """
import sys
import rasterio, rasterio.features

with rasterio.open(sys.argv[1]) as src:
    mask, transform = src.read(1), src.transform
found = list(rasterio.features.shapes(mask, mask=mask > 0, transform=transform))
print(len(found))
"""

SHAPES_GPKG = """
import sys
import geopandas as gpd
import rasterio, rasterio.features

with rasterio.open(sys.argv[1]) as src:
    mask, transform, crs = src.read(1), src.transform, src.crs
found = rasterio.features.shapes(mask, mask=mask > 0, transform=transform)
features = [{"type": "Feature", "geometry": g, "properties": {"value": v}} for g, v in found]
gpd.GeoDataFrame.from_features(features, crs=crs).to_file(sys.argv[2])  # pyogrio, GPKG
"""


def timed(args: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + sys, its workers included) of a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, done.stdout


def polygons_in(path: Path) -> tuple[int, float, int]:
    """Polygon count, total area and total holes of a polygon file."""
    table = pyogrio.read_dataframe(path)
    geometry = np.asarray(table.geometry.array, dtype=object)
    holes = int(shapely.get_num_interior_rings(geometry).sum())
    return len(geometry), float(shapely.area(geometry).sum()), holes


def mask_area(path: Path) -> float:
    """Area of the mask's positive pixels, in CRS units."""
    with rasterio.open(path) as src:
        pixels = int(np.count_nonzero(src.read(1)))
        return pixels * abs(src.transform.a * src.transform.e)


def speed_table(path: Path, size: int, out: Path, args) -> None:
    """One row: shapes() pass (and shapes + GeoPackage) against ``geoseg vectorize``, each in a
    fresh process, alternating, best of ``args.repeat``."""
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    theirs = out.with_name("b.gpkg")
    commands = {"shapes": [sys.executable, "-c", SHAPES, str(path)]}
    if args.with_gpkg:
        commands["gpkg"] = [sys.executable, "-c", SHAPES_GPKG, str(path), str(theirs)]
    commands["geoseg"] = [geoseg, "vectorize", str(path), "-o", str(out), "--overwrite",
                          "--block-size", str(args.block_size)]  # fmt: skip
    best = {name: [np.inf, np.inf] for name in commands}
    for _ in range(args.repeat):
        for name, command in commands.items():
            if name == "gpkg":
                theirs.unlink(missing_ok=True)  # to_file would append to it
            wall, cpu, stdout = timed(command)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            if name == "shapes":
                regions = int(stdout.split()[-1])
    count, area, holes = polygons_in(out)
    same = count == regions and abs(area - mask_area(path)) <= 1e-9 * area
    if args.with_gpkg:
        same = same and polygons_in(theirs) == (count, area, holes)
    (shapes_wall, shapes_cpu), (ours_wall, ours_cpu) = best["shapes"], best["geoseg"]
    gpkg = "{:8.1f} {:8.1f}".format(*best["gpkg"]) if args.with_gpkg else f"{'-':>8} {'-':>8}"
    print(f"{size:6d} {regions:8d} {holes:8d} {shapes_wall:8.1f} {shapes_cpu:8.1f} {gpkg} "
          f"{ours_wall:8.1f} {ours_cpu:8.1f} {shapes_wall / ours_wall:6.2f} "
          f"{shapes_cpu / ours_cpu:6.2f}  {same}", flush=True)  # fmt: skip


PEAK_RSS = """
import glob, sys, threading
import geoseg.delineation.vectorizing


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
    geoseg.delineation.vectorizing.PROCESS_PIXELS = float("inf")
start, peaks, stop = high_water_kib(), {}, threading.Event()
sampler = threading.Thread(target=sample_workers, args=(peaks, stop))
sampler.start()
geoseg.delineation.vectorizing.vectorize(raster, out, block_size=int(block_size), overwrite=True)
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


def memory_table(path: Path, size: int, out: Path, args) -> None:
    """One row of the memory table: peak RSS with threads and with the default."""
    from geoseg.delineation.vectorizing import PROCESS_PIXELS

    threads = peak_rss(path, out, args.block_size, "threads")
    default = peak_rss(path, out, args.block_size, "default")
    how = "processes" if size * size >= PROCESS_PIXELS else "threads"
    print(f"{size:6d} {threads[0]:10.0f} {threads[1]:12.0f} {how:>10} {default[1]:12.0f} "
          f"{default[2]:12.0f}", flush=True)  # fmt: skip


TITLES = {
    "speed": "seconds (wall, CPU), each command a fresh process, best of --repeat; "
    "ratio: shapes / geoseg",
    "memory": "peak RSS of a fresh process (MiB), with threads and with the default",
}
HEADERS = {
    "speed": f"{'size':>6} {'regions':>8} {'holes':>8} {'shapes':>8} {'cpu':>8} "
    f"{'+gpkg':>8} {'cpu':>8} {'geoseg':>8} {'cpu':>8} {'wall':>6} {'cpu':>6}  same polygons",
    "memory": f"{'size':>6} {'import MiB':>10} {'threads MiB':>12} {'default':>10} "
    f"{'default MiB':>12} {'worker MiB':>12}",
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
    parser.add_argument("--masks", nargs="+", choices=list(MASKS), default=list(MASKS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (best)")
    parser.add_argument(
        "--with-gpkg", action="store_true", help="also time shapes() + a GeoPackage by geopandas"
    )
    parser.add_argument(
        "--tables", nargs="+", choices=["speed", "memory"], default=["speed", "memory"]
    )
    args = parser.parse_args()
    args.sizes = args.sizes or [round(args.size * f) for f in (0.5, 0.5**0.5, 1.0)]
    print(f"{os.cpu_count()} cores; geoseg vectorize --block-size {args.block_size}, all cores")
    rows = {"speed": speed_table, "memory": memory_table}
    with tempfile.TemporaryDirectory(prefix="bench-vectorize-") as tmp:
        for kind in args.masks:
            masks = {s: MASKS[kind](Path(tmp) / f"{kind}{s}.tif", s) for s in args.sizes}
            for table in args.tables:
                print(f"\n{kind} mask, {table}: " + TITLES[table])
                print(HEADERS[table])
                for size, path in masks.items():
                    rows[table](path, size, Path(tmp) / "v.gpkg", args)
            for path in masks.values():
                path.unlink()


if __name__ == "__main__":
    main()
