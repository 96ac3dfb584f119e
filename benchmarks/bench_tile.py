"""Benchmark ``geoseg tile``: peak memory against raster size, and parallel speed-up.

Every figure is a ratio against a baseline measured in the same run; nothing here asserts on
time. Each tiling run happens in a fresh Python process so that its peak RSS is its own:

* memory: peak RSS of tiling (``workers=2``) scenes of growing size, compared with the peak RSS
  of a process that only imports ``geoseg.tiling`` (the floor) and with the size of the whole
  raster array (H x W x 3 bytes, the least a whole-raster tool would hold);
* speed: chips/s on one scene with ``workers=1`` against ``workers=2``, timing the whole
  ``tile()`` call and keeping the fastest of ``--repeat`` runs.

Run ``.venv/bin/python benchmarks/bench_tile.py`` (``make bench``); ``--quick`` for a cheap run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geoseg.synthetic import synth

CHILD = """
import json, resource, sys, time
from geoseg.tiling import tile
args = json.loads(sys.argv[1])
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
written, seconds, cpu_seconds = 0, 0.0, 0.0
if args:
    start, cpu_start = time.perf_counter(), cpu()
    summary = tile([args["image"]], args["out"], labels=args["labels"], boundary_width="1.5",
                   workers=args["workers"], overwrite=True, keep_empty=1.0)
    written, seconds, cpu_seconds = summary.written, time.perf_counter() - start, cpu() - cpu_start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({"written": written, "seconds": round(seconds, 3),
                  "cpu_seconds": round(cpu_seconds, 3), "peak_rss": rss * scale}))
"""

MIB = 2**20


def run_child(args: dict) -> dict:
    """Run one tiling (or, with empty ``args``, only the import) in a fresh interpreter."""
    os.sync()  # flush earlier runs' chips so their write-back does not land in this timing
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
    """The child's arguments for tiling ``scene`` into a directory beside it."""
    return {
        "image": str(scene / "image.tif"),
        "labels": str(scene / "parcels.gpkg"),
        "out": str(scene.parent / f"chips-{scene.name}-w{workers}"),
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="defaults: --sizes 2048 4096 8192 --speed-size 4096; --quick: 1024 2048, 2048",
    )
    parser.add_argument("--sizes", type=int, nargs="+", metavar="PX", help="memory scenes")
    parser.add_argument("--speed-size", type=int, metavar="PX", help="speed-up scene")
    parser.add_argument("--repeat", type=int, default=3, help="speed runs per worker count (best)")
    parser.add_argument("--quick", action="store_true", help="small scenes, one speed run")
    opts = parser.parse_args()
    sizes = opts.sizes or ([1024, 2048] if opts.quick else [2048, 4096, 8192])
    speed_size = opts.speed_size or (2048 if opts.quick else 4096)
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

        runs = {1: [], 2: []}
        for _ in range(repeat):  # alternate, so that drift in the machine hits both alike
            for workers, results in runs.items():
                results.append(run_child(tile_args(scenes[speed_size], workers)))
                print(f"tile {speed_size} px, workers={workers}: {results[-1]}", flush=True)
        best = {w: min(results, key=lambda r: r["seconds"]) for w, results in runs.items()}

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
    grow = f"{(large / small) ** 2:.0f}x"
    chips = memory[large]["written"] / memory[small]["written"]
    print(
        f"| ratio {large}/{small} | {grow} | {grow} | {chips:.0f}x "
        f"| {rss_ratio:.2f}x | {above:.2f}x |"
    )
    speed = {w: r["written"] / r["seconds"] for w, r in best.items()}
    print(f"\n| {speed_size} px scene, best of {repeat} | chips/s | CPU s / wall s |")
    print("|---|---|---|")
    for workers, r in best.items():
        usage = r["cpu_seconds"] / r["seconds"]
        print(f"| workers={workers} | {speed[workers]:.1f} | {usage:.2f} |")
    print(f"| speed-up 2 vs 1 | {speed[2] / speed[1]:.2f}x | - |")


if __name__ == "__main__":
    main()
