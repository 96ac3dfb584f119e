"""Benchmark ``geoseg train`` end to end against the same model's raw ``train_step``.

Chips: the demo's (a synthetic ``--size`` px scene, 256 px chips, extent + boundary + distance).

1. **geoseg train**, the demo's settings (base 16, batch 8, ``--epochs``), each batch and epoch
   timed through its ``progress`` and ``on_epoch`` hooks. Its wall time splits into: set-up
   until the first step ends (model, datasets, tracing), training steps (from each step's end
   to the next one's, within an epoch), the epoch ends (the validation pass, checkpoints, logs:
   from an epoch's last step to the next epoch's first, less one step), and the finish after
   the last epoch (scores on val, delineation tuning, the model card).
2. **raw train_step**: the same network and loss (geoseg's own compile), ``model.fit`` on one
   batch held in memory, repeated, after a warm-up; best of ``--repeat``.

The ratio of geoseg's chips/s over its whole run to the raw rate says how much of a user's wait
is the model itself. Run ``.venv/bin/python benchmarks/bench_train_speed.py [--epochs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import geoseg  # noqa: E402
from geoseg.models.unet import build_model  # noqa: E402
from geoseg.synthetic.scene import synth  # noqa: E402
from geoseg.tiling.tiler import tile  # noqa: E402
from geoseg.training.dataset import make_dataset, open_chips  # noqa: E402
from geoseg.training.fit import _compile
from geoseg.training.plan import make_plan
from geoseg.training.settings import TrainSettings

DEMO = dict(base_filters=16, batch_size=8, mixed_precision="off", seed=0, epoch_chips=0)


def demo_chips(root: Path, size: int) -> Path:
    """The demo's chips: a synthetic scene, 256 px chips, boundary 1.5 m and distance."""
    synth(str(root / "scene"), size=size, seed=0, overwrite=True)
    tile([str(root / "scene" / "image.tif")], str(root / "chips"),
         labels=str(root / "scene" / "parcels.gpkg"), boundary_width="1.5", distance=True,
         overwrite=True)  # fmt: skip
    return root / "chips"


class Clock:
    """Times of every step's end and every epoch's end, from ``train``'s hooks."""

    def __init__(self):
        self.steps: list[tuple[int, float]] = []  # (epoch, time)
        self.epochs: list[float] = []

    def progress(self, step: int, steps: int) -> None:
        self.steps.append((len(self.epochs), time.perf_counter()))

    def on_epoch(self, epoch: int, epochs: int, logs: dict) -> None:
        self.epochs.append(time.perf_counter())


def geoseg_run(chips: Path, out: Path, epochs: int) -> dict:
    clock = Clock()
    started = time.perf_counter()
    geoseg.train(chips, out, epochs=epochs, patience=epochs, overwrite=True,
                 progress=clock.progress, on_epoch=clock.on_epoch, **DEMO)  # fmt: skip
    ended = time.perf_counter()
    by_epoch = [[t for e, t in clock.steps if e == k] for k in range(epochs)]
    intervals = [b - a for times in by_epoch for a, b in zip(times, times[1:])]
    step = statistics.median(intervals)
    gaps = [nxt[0] - cur[-1] - step for cur, nxt in zip(by_epoch, by_epoch[1:])]
    return {
        "wall": ended - started,
        "steps": len(clock.steps),
        "setup": clock.steps[0][1] - started,
        "training": sum(intervals) + step * (epochs - 1),
        "epoch_ends": sum(gaps) + (clock.epochs[-1] - by_epoch[-1][-1]),
        "finish": ended - clock.epochs[-1],
        "step": step,
        "first_epoch": by_epoch[0][-1] - started,
    }


def raw_steps_per_second(chips: Path, steps: int, repeat: int) -> float:
    """Steps/s of the same network and loss on one batch held in memory."""
    folder = open_chips(chips)
    settings = TrainSettings(**DEMO)
    plan = make_plan(folder, settings)
    tf.keras.utils.set_random_seed(0)
    model = build_model(plan.network)
    _compile(model, plan, settings, settings.lr)
    data = make_dataset(folder, "train", settings.batch_size, plan.class_bands, training=True)
    batch = next(iter(data))
    memory = tf.data.Dataset.from_tensor_slices(batch).repeat().batch(settings.batch_size)
    model.fit(memory, steps_per_epoch=4, epochs=1, verbose=0)  # trace and warm up
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        model.fit(memory, steps_per_epoch=steps, epochs=1, verbose=0)
        best = max(best, steps / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        chips = demo_chips(Path(tmp), args.size)
        train_chips = len(open_chips(chips).files["train"])
        found = geoseg_run(chips, Path(tmp) / "model", args.epochs)
        raw = raw_steps_per_second(chips, max(8, found["steps"] // args.epochs), args.repeat)
    batch = DEMO["batch_size"]
    chips_per_s = found["steps"] * batch / found["wall"]
    print(f"{train_chips} train chips of 256 px, batch {batch}, base 16, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}")  # fmt: skip
    print("| part of geoseg train | seconds | share |")
    print("|---|---|---|")
    for key, name in (("setup", "set-up to the first step (model, datasets, tracing)"),
                      ("training", "training steps"),
                      ("epoch_ends", "epoch ends (validation pass, checkpoints, logs)"),
                      ("finish", "finish (val scores, delineation tuning, card)")):  # fmt: skip
        print(f"| {name} | {found[key]:.1f} | {found[key] / found['wall']:.0%} |")
    print(f"| whole run | {found['wall']:.1f} | 100% |")
    print(f"\nraw train_step: {raw * batch:.1f} chips/s; geoseg's steps: "
          f"{batch / found['step']:.1f} chips/s ({batch / found['step'] / (raw * batch):.2f}x); "
          f"geoseg's whole run: {chips_per_s:.1f} chips/s "
          f"({chips_per_s / (raw * batch):.2f}x of raw)")  # fmt: skip


if __name__ == "__main__":
    main()
