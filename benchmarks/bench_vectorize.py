"""Benchmark ``geoseg vectorize`` against one ``rasterio.features.shapes`` pass over the mask.

The baseline reads the whole mask into memory and polygonises it in one call (it neither merges
across blocks nor scales past memory); ``geoseg vectorize`` works by blocks in parallel and merges
the polygons on block borders. Both run in this process on the same GeoTIFF, and the script
checks that they produce the same polygons (count and total area). Figures: seconds, speed ratio
(baseline time / geoseg time) and seconds per megapixel for each size (linear growth shows as a
constant).

Run ``.venv/bin/python benchmarks/bench_vectorize.py`` (``make bench``: 5000, 7071 and 10 000 px,
the last with about 460 000 regions); ``--size`` scales them.
"""

from __future__ import annotations

import argparse
import os
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

    write_by_blocks(path, size, 1, blobs, block=1000)
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "building")
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
    args = parser.parse_args()
    args.sizes = args.sizes or [round(args.size * f) for f in (0.5, 0.5**0.5, 1.0)]
    print(f"{os.cpu_count()} cores; geoseg vectorize --block-size {args.block_size}, all cores")
    print(f"{'size':>6} {'regions':>9} {'shapes s':>9} {'geoseg s':>9} {'ratio':>6} "
          f"{'geoseg s/MPx':>12}  same polygons")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-vectorize-") as tmp:
        for size in args.sizes:
            path = make_mask(Path(tmp) / f"mask{size}.tif", size)
            base_s, base_n, base_area = baseline(path)
            ours_s, ours_n, ours_area = geoseg_run(path, Path(tmp) / "v.gpkg", args.block_size)
            same = base_n == ours_n and abs(base_area - ours_area) <= 1e-6 * base_area
            print(f"{size:6d} {base_n:9d} {base_s:9.1f} {ours_s:9.1f} {base_s / ours_s:6.2f} "
                  f"{ours_s / (size * size / 1e6):12.3f}  {same}", flush=True)  # fmt: skip
            path.unlink()


if __name__ == "__main__":
    main()
