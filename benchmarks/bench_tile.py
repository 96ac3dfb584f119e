"""Benchmark ``geoseg tile`` against ``gdal_retile.py``, with and without a cadastre; memory.

Every figure is a ratio against a baseline measured in the same run; nothing here asserts on
time. Each run happens in a fresh process, so that its time and peak RSS are its own:

* speed: a ``--size`` px 3-band uint8 raster is chipped into 256 px tiles by GDAL's standard
  tiler (``gdal_retile.py``, with the same tiled DEFLATE + predictor GeoTIFFs geoseg writes),
  by ``geoseg tile`` without labels, and by ``geoseg tile`` with a cadastre of ``--parcels``
  Voronoi parcels (masks of parcels and of 1.5 m boundaries). Runs alternate and the best of
  ``--repeat`` is kept;
* chip writes: ms per chip at DEFLATE level 6 (GDAL's default) and level 1 (geoseg's);
* memory: peak RSS of ``geoseg tile`` with the cadastre (at the same parcel density) on rasters
  of ``--memory-sizes``, against a process that only imports ``geoseg.tiling`` (the floor).

``gdal_retile.py`` comes from Debian's ``gdal-bin`` and ``python3-gdal`` (``make bench-setup``).

Run ``.venv/bin/python benchmarks/bench_tile.py`` (``make bench``: 8000 px with 64 000 parcels
and memory at 2000/4000/8000 px); ``--size 10000 --memory-sizes 4000 8000 16000`` for the
issue's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from scenes import write_by_blocks
from scipy import ndimage

CHILD = """
import json, resource, sys, time
args = json.loads(sys.argv[1])
from geoseg.tiling import tile
start = time.perf_counter()
written = 0
if args:
    summary = tile([args["image"]], args["out"], labels=args["labels"],
                   boundary_width="1.5" if args["labels"] else None,
                   workers=args["workers"], overwrite=True, keep_empty=1.0)
    written = summary.written
seconds = time.perf_counter() - start
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"written": written, "seconds": seconds, "peak_rss": rss}))
"""

MIB = 2**20
PARCELS_PER_MPX = 1000  # 100 000 parcels on 10 000 x 10 000 px: about 32 x 32 px each


def make_image(path: Path, size: int) -> Path:
    """A ``size`` px 3-band uint8 raster: smooth fields with noise (compresses like imagery)."""

    def fields(rng, h, w):
        coarse = ndimage.gaussian_filter(rng.random((3, h // 16 + 1, w // 16 + 1)), (0, 1, 1))
        smooth = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :w]
        noise = rng.normal(0, 6, (3, h, w))
        return np.clip(40 + 400 * (smooth - 0.4) + noise, 0, 255).astype(np.uint8)

    return write_by_blocks(path, size, 3, fields, block=1024)


def make_cadastre(path: Path, image: Path, parcels: int, seed: int = 0) -> Path:
    """``parcels`` Voronoi parcels covering the raster, in the raster's CRS, as a GeoPackage."""
    with rasterio.open(image) as src:
        bounds, crs = src.bounds, src.crs
    rng = np.random.default_rng(seed)
    xs = rng.uniform(bounds.left, bounds.right, parcels)
    ys = rng.uniform(bounds.bottom, bounds.top, parcels)
    extent = shapely.box(*bounds)
    cells = shapely.voronoi_polygons(
        shapely.multipoints(np.column_stack([xs, ys])), extend_to=extent
    )
    cells = shapely.intersection(np.asarray(shapely.get_parts(cells)), extent)
    frame = gpd.GeoDataFrame({"parcel": np.arange(len(cells))}, geometry=cells, crs=crs)
    frame.to_file(path, layer="parcels", driver="GPKG", engine="pyogrio")
    return path


def run_child(args: dict) -> dict:
    """Run one tiling (or, with empty ``args``, only the import) in a fresh interpreter."""
    os.sync()  # flush earlier runs' chips so their write-back does not land in this timing
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"child failed with {args}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_geoseg(image: Path, out: Path, labels: Path | None, workers: int = 2) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # not part of the timing
    labels = str(labels) if labels else None
    return run_child({"image": str(image), "out": str(out), "labels": labels, "workers": workers})


def run_retile(retile: str, image: Path, out: Path) -> dict:
    """``gdal_retile.py`` into 256 px tiles with geoseg's creation options: chips, seconds."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    os.sync()
    creation = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "PREDICTOR=2",
                "ZLEVEL=1"]  # fmt: skip
    options = [arg for option in creation for arg in ("-co", option)]
    command = [retile, "-q", *options, "-ps", "256", "256", "-targetDir", str(out), str(image)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    return {"written": len(list(out.glob("*.tif"))), "seconds": seconds}


def speed(root: Path, size: int, parcels: int, repeat: int, retile: str | None) -> None:
    image = make_image(root / f"image{size}.tif", size)
    cadastre = make_cadastre(root / f"cadastre{size}.gpkg", image, parcels)
    out = root / "chips"
    settings = {
        "gdal_retile.py": lambda: run_retile(retile, image, out),
        "geoseg, no labels": lambda: run_geoseg(image, out, None),
        "geoseg, no labels, workers=1": lambda: run_geoseg(image, out, None, workers=1),
        f"geoseg, {parcels} parcels": lambda: run_geoseg(image, out, cadastre),
    }
    if retile is None:
        del settings["gdal_retile.py"]
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(repeat):  # alternate, so that drift in the machine hits every run alike
        for name, run in settings.items():
            runs[name].append(run())
            print(f"  {name}: {runs[name][-1]['written']} chips, {runs[name][-1]['seconds']:.1f} s",
                  flush=True)  # fmt: skip
    best = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    reference = best["geoseg, no labels"]
    print(f"\nspeed: {size} x {size} px, 3 bands uint8, 256 px chips, best of {repeat}")
    print("| run | chips | seconds | chips/s | time / geoseg without labels |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        chips = results[0]["written"]
        print(f"| {name} | {chips} | {best[name]:.1f} | {chips / best[name]:.0f} "
              f"| {best[name] / reference:.2f} |")  # fmt: skip
    if retile:
        print(f"geoseg (no labels) vs gdal_retile.py: {best['gdal_retile.py'] / reference:.2f}x")
    print(f"with {parcels} parcels vs without: {best[f'geoseg, {parcels} parcels'] / reference:.2f}"
          " of the time")  # fmt: skip


def chip_writes(root: Path, count: int = 400) -> None:
    """ms per 256 px chip and bytes at DEFLATE level 6 (GDAL's default) and 1 (geoseg's)."""
    image = make_image(root / "writes.tif", 2048)
    with rasterio.open(image) as src:
        chips = [src.read(window=((r, r + 256), (c, c + 256))) for r in range(0, 2048, 256)
                 for c in range(0, 2048, 256)]  # fmt: skip
        profile = dict(driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       crs=src.crs, transform=src.transform, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", predictor=2)  # fmt: skip
    levels = {"DEFLATE level 6 (GDAL's default)": 6, "DEFLATE level 1 (geoseg)": 1}
    best, sizes = dict.fromkeys(levels, float("inf")), {}
    for _ in range(3):  # alternate, best of 3
        for name, level in levels.items():
            folder = root / "writes"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            start = time.perf_counter()
            for i in range(count):
                with rasterio.open(folder / f"{i}.tif", "w", **profile, zlevel=level) as dst:
                    dst.write(chips[i % len(chips)])
            best[name] = min(best[name], (time.perf_counter() - start) / count * 1000)
            sizes[name] = sum(f.stat().st_size for f in folder.iterdir()) / count
    print(
        f"\nchip writes: {count} chips of 256 x 256 x 3 uint8, predictor 2, best of 3, one thread"
    )
    print("| compression | ms per chip | KiB per chip |")
    print("|---|---|---|")
    for name in levels:
        print(f"| {name} | {best[name]:.2f} | {sizes[name] / 1024:.1f} |")


def memory(root: Path, sizes: list[int]) -> None:
    floor = run_child({})["peak_rss"]
    print(f"\nmemory: geoseg tile with a cadastre of {PARCELS_PER_MPX} parcels/Mpx, 2 workers")
    print("| raster | pixels | raster array | parcels | chips | seconds | peak RSS | above floor |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| import only | - | - | - | - | - | {floor / MIB:.0f} MiB | 0 MiB |")
    peaks = []
    for size in sizes:
        image = make_image(root / f"mem{size}.tif", size)
        parcels = round(PARCELS_PER_MPX * size * size / 1e6)
        cadastre = make_cadastre(root / f"mem{size}.gpkg", image, parcels)
        result = run_geoseg(image, root / "chips", cadastre)
        peaks.append(result["peak_rss"])
        print(f"| {size} px | {size * size / 1e6:.0f} M | {size * size * 3 / MIB:.0f} MiB "
              f"| {parcels} | {result['written']} | {result['seconds']:.1f} "
              f"| {result['peak_rss'] / MIB:.0f} MiB "
              f"| {(result['peak_rss'] - floor) / MIB:.0f} MiB |",
              flush=True)  # fmt: skip
        image.unlink()
        shutil.rmtree(root / "chips")
    print(f"largest / smallest peak RSS: {peaks[-1] / peaks[0]:.2f} "
          f"for {(sizes[-1] / sizes[0]) ** 2:.0f}x the pixels and parcels")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="speed raster side (px)")
    parser.add_argument("--parcels", type=int, help="parcels on the speed raster "
                        f"(default {PARCELS_PER_MPX} per Mpx: 100 000 at 10 000 px)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="speed runs per setting (best)")
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[2000, 4000, 8000])
    args = parser.parse_args()
    parcels = args.parcels or round(PARCELS_PER_MPX * args.size**2 / 1e6)
    retile = shutil.which("gdal_retile.py") or shutil.which("gdal_retile")
    if retile is None:
        print("gdal_retile.py not found (make bench-setup installs gdal-bin): no GDAL baseline")
    print(f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-tile-") as tmp:
        speed(Path(tmp), args.size, parcels, args.repeat, retile)
        chip_writes(Path(tmp))
        if args.memory_sizes:
            memory(Path(tmp), sorted(args.memory_sizes))


if __name__ == "__main__":
    main()
