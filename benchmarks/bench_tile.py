"""Benchmark ``geoseg tile`` against ``gdal_retile.py``, per chip codec, with a cadastre; memory.

Every figure is a ratio against a baseline measured in the same run; nothing here asserts on
time. Each run happens in a fresh process, so that its time and peak RSS are its own:

* speed: a ``--size`` px 3-band uint8 raster (smooth fields plus pixel noise) is chipped into
  256 px tiles by GDAL's standard tiler, ``gdal_retile.py``, with its defaults (uncompressed
  strips: what a user runs instead) and with geoseg's chip settings (tiled, ZSTD level 1,
  predictor 2, bands one after the other); by ``geoseg tile`` without labels with each
  ``--compress`` codec, on 2 threads and on 1; and by ``geoseg tile`` with a cadastre of
  ``--parcels`` Voronoi parcels (masks of parcels and of 1.5 m boundaries). Runs alternate and
  the best of ``--repeat`` is kept. Times are those of ``tile()`` in its process and, like the
  issue's, of the whole command (interpreter start, imports, exit);
* chip encodings: ms of CPU per chip and KiB per chip for each codec, with and without the
  predictor, for image chips of that raster and mask chips of that cadastre, written by
  geoseg's chip writer on one thread;
* reads: chips/s reading the chips of each codec back in the training pipeline
  (``bench_train_input.py --codecs-only``, run in its own process);
* ``--labels-only``: only the runs of geoseg without labels and with the cadastre, alternately,
  with their CPU time (user + system of all threads, which a machine shared with other work
  disturbs less than the wall time): the labelled / label-free ratio;
* memory: peak RSS of ``geoseg tile`` with the cadastre (at the same parcel density) on rasters
  of ``--memory-sizes``, against a process that only imports ``geoseg.tiling.tiler`` (the floor).

``gdal_retile.py`` comes from Debian's ``gdal-bin`` and ``python3-gdal`` (``make bench-setup``).

Run ``.venv/bin/python benchmarks/bench_tile.py`` (``make bench``: 8000 px with 64 000 parcels
and memory at 2000/4000/8000 px); ``--size 10000 --memory-sizes 4000 8000 16000`` for the
issue's figures.
"""

from __future__ import annotations

import argparse
import functools
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

from geoseg.tiling.chip_files import write_stacked
from geoseg.tiling.chips import CODECS, chip_profile
from geoseg.tiling.tiler import tile

CHILD = """
import json, resource, sys, time
args = json.loads(sys.argv[1])
from geoseg.tiling.tiler import tile
start, cpu = time.perf_counter(), time.process_time()
written = 0
if args:
    summary = tile([args["image"]], args["out"], labels=args["labels"],
                   boundary_width="1.5" if args["labels"] else None, compress=args["compress"],
                   workers=args["workers"], overwrite=True, keep_empty=1.0)
    written = summary.written
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"written": written, "seconds": seconds, "cpu": cpu, "peak_rss": rss}))
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
    """Run one tiling (or, with empty ``args``, only the import) in a fresh interpreter; adds
    the wall time of the whole process (``command``)."""
    os.sync()  # flush earlier runs' chips so their write-back does not land in this timing
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True
    )
    command = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"child failed with {args}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"command": command}


def run_geoseg(
    image: Path, out: Path, labels: Path | None, workers: int = 2, compress: str = "zstd"
) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # not part of the timing
    labels = str(labels) if labels else None
    args = {"image": str(image), "out": str(out), "labels": labels, "workers": workers}
    result = run_child(args | {"compress": compress})
    return result | {"kib": folder_kib(out / "images", result["written"])}


def folder_kib(folder: Path, files: int) -> float:
    """KiB per file in ``folder``."""
    return sum(f.stat().st_size for f in folder.iterdir()) / max(files, 1) / 1024


RETILE_AS_GEOSEG = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=ZSTD",
                    "ZSTD_LEVEL=1", "PREDICTOR=2", "INTERLEAVE=BAND"]  # fmt: skip
"""geoseg's default chip settings as ``gdal_retile.py`` creation options."""


def run_retile(retile: str, image: Path, out: Path, creation: list[str]) -> dict:
    """``gdal_retile.py`` into 256 px tiles with ``creation`` options: chips, seconds, size."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    os.sync()
    options = [arg for option in creation for arg in ("-co", option)]
    command = [retile, "-q", *options, "-ps", "256", "256", "-targetDir", str(out), str(image)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    written = len(list(out.glob("*.tif")))
    kib = folder_kib(out, written)
    return {"written": written, "seconds": seconds, "cpu": None, "command": seconds, "kib": kib}


def speed(
    root: Path, size: int, parcels: int, repeat: int, retile: str | None, labels_only: bool
) -> None:
    image = make_image(root / f"image{size}.tif", size)
    cadastre = make_cadastre(root / f"cadastre{size}.gpkg", image, parcels)
    out = root / "chips"
    settings = {
        "gdal_retile.py, its defaults": lambda: run_retile(retile, image, out, []),
        "gdal_retile.py, geoseg's settings": lambda: run_retile(
            retile, image, out, RETILE_AS_GEOSEG
        ),
        **{
            f"geoseg, no labels, --compress {codec}": functools.partial(
                run_geoseg, image, out, None, compress=codec
            )
            for codec in CODECS
        },
        "geoseg, no labels, workers=1": lambda: run_geoseg(image, out, None, workers=1),
        f"geoseg, {parcels} parcels": lambda: run_geoseg(image, out, cadastre),
    }
    plain = "geoseg, no labels, --compress zstd"
    labelled = f"geoseg, {parcels} parcels"
    if labels_only:
        settings = {name: settings[name] for name in (plain, labelled)}
    if retile is None:
        settings = {k: v for k, v in settings.items() if not k.startswith("gdal_retile")}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(repeat):  # alternate, so that drift in the machine hits every run alike
        for name, run in settings.items():
            runs[name].append(run())
            print(f"  {name}: {runs[name][-1]['written']} chips, {runs[name][-1]['seconds']:.1f} s"
                  f" ({runs[name][-1]['command']:.1f} s command)", flush=True)  # fmt: skip
    best = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    command = {name: min(r["command"] for r in results) for name, results in runs.items()}
    cpu = {name: min(r["cpu"] or r["seconds"] for r in results) for name, results in runs.items()}
    print(f"\nspeed: {size} x {size} px, 3 bands uint8, 256 px chips, best of {repeat}")
    print("| run | chips | KiB per chip | seconds | chips/s | CPU seconds | command seconds "
          "| time / geoseg without labels |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        chips = results[0]["written"]
        print(f"| {name} | {chips} | {results[-1]['kib']:.1f} | {best[name]:.2f} "
              f"| {chips / best[name]:.0f} | {cpu[name]:.2f} | {command[name]:.2f} "
              f"| {best[name] / best[plain]:.2f} |")  # fmt: skip
    if retile and not labels_only:
        for baseline in ("gdal_retile.py, its defaults", "gdal_retile.py, geoseg's settings"):
            print(f"geoseg (no labels, zstd) vs {baseline}: {best[baseline] / best[plain]:.2f}x "
                  f"({command[baseline] / command[plain]:.2f}x command to command)")  # fmt: skip
        uncompressed = best["gdal_retile.py, its defaults"] / best[plain.replace("zstd", "none")]
        print(f"geoseg --compress none vs gdal_retile.py, its defaults: {uncompressed:.2f}x")
    print(f"with {parcels} parcels vs without: {best[labelled] / best[plain]:.2f} of the time, "
          f"{cpu[labelled] / cpu[plain]:.2f} of the CPU time (all threads)")  # fmt: skip


def chip_encodings(root: Path, size: int = 2048, repeat: int = 3) -> None:
    """ms of CPU and KiB per 256 px chip for each codec, with and without the predictor, for
    image chips and mask chips, written by geoseg's chip writer (16 chips per GDAL file)."""
    image = make_image(root / "encodings.tif", size)
    cadastre = make_cadastre(root / "encodings.gpkg", image, round(PARCELS_PER_MPX * size**2 / 1e6))
    chips = root / "encodings"
    tile([str(image)], str(chips), labels=str(cadastre), boundary_width="1.5", keep_empty=1.0,
         compress="none", val_fraction=0, overwrite=True)  # fmt: skip
    kinds = {kind: read_folder(chips / kind) for kind in ("images", "masks")}
    cases = [(kind, codec, predictor) for kind in kinds for codec in CODECS
             for predictor in ((False, True) if codec != "none" else (False,))]  # fmt: skip
    best = dict.fromkeys(cases, float("inf"))
    sizes = {}
    for _ in range(repeat):  # alternate, best of repeat
        for case in cases:
            kind, codec, predictor = case
            arrays, transforms, crs = kinds[kind]
            profile = chip_profile(crs, arrays[0].shape[0], "uint8", 256, None, codec, mask=True)
            if predictor:
                profile["predictor"] = 2
            folder = root / "writes"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            start = time.process_time()
            for at in range(0, len(arrays), 16):
                paths = [folder / f"{i}.tif" for i in range(at, min(at + 16, len(arrays)))]
                write_stacked(paths, arrays[at : at + 16], transforms[at : at + 16], profile)
            best[case] = min(best[case], (time.process_time() - start) / len(arrays) * 1000)
            sizes[case] = folder_kib(folder, len(arrays))
    print(f"\nchip encodings: {len(kinds['images'][0])} chips of 256 px (3-band images, "
          "2-band masks of parcels and boundaries), geoseg's writer, one thread, best of "
          f"{repeat}; geoseg writes images with the predictor, masks without")  # fmt: skip
    print("| chips | codec | predictor | ms CPU per chip | KiB per chip |")
    print("|---|---|---|---|---|")
    for case in cases:
        kind, codec, predictor = case
        print(f"| {kind} | {codec} | {'2' if predictor else '-'} | {best[case]:.2f} "
              f"| {sizes[case]:.1f} |")  # fmt: skip


def read_folder(folder: Path) -> tuple[list[np.ndarray], list, object]:
    """Every chip's pixels and transform in ``folder``, and their CRS."""
    arrays, transforms = [], []
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as src:
            arrays.append(src.read())
            transforms.append(src.transform)
            crs = src.crs
    return arrays, transforms, crs


def reads(repeat: int) -> None:
    """The training pipeline's read rate per codec, from bench_train_input.py."""
    script = Path(__file__).with_name("bench_train_input.py")
    command = [sys.executable, str(script), "--codecs-only", "--repeat", str(repeat)]
    subprocess.run(command, check=True)


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
    parser.add_argument("--no-reads", action="store_true", help="skip the training reads")
    only = "only geoseg without labels and with the cadastre, alternately"
    parser.add_argument("--labels-only", action="store_true", help=only)
    args = parser.parse_args()
    parcels = args.parcels or round(PARCELS_PER_MPX * args.size**2 / 1e6)
    retile = shutil.which("gdal_retile.py") or shutil.which("gdal_retile")
    if retile is None:
        print("gdal_retile.py not found (make bench-setup installs gdal-bin): no GDAL baseline")
    print(f"{os.cpu_count()} cores, GDAL {rasterio.__gdal_version__}")
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-tile-") as tmp:
        speed(Path(tmp), args.size, parcels, args.repeat, retile, args.labels_only)
        if args.labels_only:
            return
        chip_encodings(Path(tmp))
        if not args.no_reads:
            reads(args.repeat)
        if args.memory_sizes:
            memory(Path(tmp), sorted(args.memory_sizes))


if __name__ == "__main__":
    main()
