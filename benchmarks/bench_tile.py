"""Benchmark ``geoseg tile``: peak memory against raster size, and parallel speed-up.

Every figure is a ratio against a baseline measured in the same run; nothing here asserts on
time. Each tiling run happens in a fresh Python process so that its peak RSS is its own:

* memory: peak RSS of tiling scenes of growing size, compared with the peak RSS of a process
  that only imports ``geoseg.tiling`` (the floor) and with the size of the whole raster array
  (H x W x 3 bytes, the least a whole-raster tool would hold);
* speed: chips/s on one scene with ``workers=1`` against ``workers=2``.

Run ``.venv/bin/python benchmarks/bench_tile.py`` (``make bench``); ``--quick`` for a cheap run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geoseg.synth import synth

CHILD = """
import json, resource, sys, time
from geoseg.tiling import tile
args = json.loads(sys.argv[1])
written, seconds = 0, 0.0
if args:
    start = time.perf_counter()
    summary = tile([args["image"]], args["out"], labels=args["labels"], boundary_width="1.5",
                   workers=args["workers"], overwrite=True, keep_empty=1.0)
    written, seconds = summary.written, time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({"written": written, "seconds": seconds, "peak_rss": rss * scale}))
"""

MIB = 2**20


def run_child(args: dict) -> dict:
    """Run one tiling (or, with empty ``args``, only the import) in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"child failed with {args}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_scene(root: Path, size: int) -> Path:
    """Write a synthetic scene of ``size`` x ``size`` pixels and return its directory."""
    scene = root / f"scene{size}"
    start = time.perf_counter()
    synth(str(scene), size=size, seed=0, overwrite=True)
    print(f"synth {size} px: {time.perf_counter() - start:.1f} s", flush=True)
    return scene


def tile_args(scene: Path, workers: int) -> dict:
    return {
        "image": str(scene / "image.tif"),
        "labels": str(scene / "parcels.gpkg"),
        "out": str(scene.parent / f"chips-{scene.name}-w{workers}"),
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="scene sizes, px (default 2048 8192)")
    parser.add_argument("--speed-size", type=int, help="scene size for the speed-up (default 2048)")
    parser.add_argument("--repeat", type=int, default=2, help="speed runs per worker count (best)")
    parser.add_argument("--quick", action="store_true", help="small scenes, one speed run")
    opts = parser.parse_args()
    sizes = opts.sizes or ([1024, 2048] if opts.quick else [2048, 8192])
    speed_size = opts.speed_size or (1024 if opts.quick else 2048)
    repeat = 1 if opts.quick else opts.repeat

    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as tmp:
        root = Path(tmp)
        scenes = {s: make_scene(root, s) for s in sorted({*sizes, speed_size})}

        floor = run_child({})["peak_rss"]
        print(f"import floor: {floor / MIB:.0f} MiB", flush=True)
        memory = {}
        for size in sorted(sizes):
            memory[size] = run_child(tile_args(scenes[size], workers=2))
            print(f"tile {size} px: {memory[size]}", flush=True)

        speed = {}
        for workers in (1, 2):
            runs = [run_child(tile_args(scenes[speed_size], workers)) for _ in range(repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            speed[workers] = best["written"] / best["seconds"]
            print(f"tile {speed_size} px, workers={workers}: {runs}", flush=True)

    small, large = min(sizes), max(sizes)
    print("\n| scene | pixels | raster array | chips | peak RSS | above import floor |")
    print("|---|---|---|---|---|---|")
    print(f"| import only | - | - | - | {floor / MIB:.0f} MiB | 0 MiB |")
    for size, r in memory.items():
        array = size * size * 3
        print(
            f"| {size} px | {size * size / 1e6:.1f} M | {array / MIB:.0f} MiB | {r['written']} "
            f"| {r['peak_rss'] / MIB:.0f} MiB | {(r['peak_rss'] - floor) / MIB:.0f} MiB |"
        )
    rss_ratio = memory[large]["peak_rss"] / memory[small]["peak_rss"]
    above = (memory[large]["peak_rss"] - floor) / max(memory[small]["peak_rss"] - floor, 1)
    print(
        f"| ratio {large}/{small} | {(large / small) ** 2:.0f}x | {(large / small) ** 2:.0f}x "
        f"| - | {rss_ratio:.2f}x | {above:.2f}x |"
    )
    print(f"\n| {speed_size} px scene | chips/s |")
    print("|---|---|")
    for workers, rate in speed.items():
        print(f"| workers={workers} | {rate:.1f} |")
    print(f"| speed-up 2 vs 1 | {speed[2] / speed[1]:.2f}x |")


if __name__ == "__main__":
    main()
