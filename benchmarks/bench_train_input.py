"""Benchmark the training input pipeline: steps/s from chips on disk vs one batch in memory.

All runs train the same compiled model in the same process with the same batch size; the
in-memory run repeats a single batch taken from the pipeline, so it measures the model alone.
The ratio (chips / memory) shows whether reading, normalising and augmenting chips slows
training down, for chips decoded every epoch (``cache=False``, large datasets) and decoded
once and kept in memory (``cache=True``, the default below 1 GiB). The pipeline alone (no
model) is also timed, to show its headroom for faster accelerators.

With ``--codecs-only`` (run by ``bench_tile.py``), chips of each codec of ``geoseg tile
--compress``, cut from ``bench_tile.py``'s imagery (smooth fields plus pixel noise) and
cadastre, are read back instead: chips/s of ``read_chip`` on one thread and of the pipeline
alone (``make_dataset``, decoding every epoch), alternating codecs, best of ``--repeat``; the
chips are in the page cache, so this is decoding and opening files, not the disk.
Run ``.venv/bin/python benchmarks/bench_train_input.py [--quick] [--codecs-only]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_tile import PARCELS_PER_MPX, folder_kib, make_cadastre, make_image  # noqa: E402
from scenes import synthetic_chips  # noqa: E402

from geoseg.models.config import UNetConfig
from geoseg.models.unet import build_unet
from geoseg.tiling.chips import CODECS  # noqa: E402
from geoseg.tiling.tiler import tile  # noqa: E402
from geoseg.training.dataset import make_dataset, open_chips, read_chip  # noqa: E402
from geoseg.training.losses import SegmentationLoss, training_metrics  # noqa: E402


def snapshot(model) -> list:
    """The model's and optimizer's variables, to start every timed run from the same state."""
    return [v.numpy() for v in model.variables + model.optimizer.variables]


def restore(model, values: list) -> None:
    for variable, value in zip(model.variables + model.optimizer.variables, values):
        variable.assign(value)


def steps_per_second(model, dataset, steps: int, start_state: list | None = None) -> float:
    """Steps/s of ``steps`` training steps (a model trained on one batch over and over drifts
    into slower arithmetic, so timed runs start from ``start_state``)."""
    if start_state is not None:
        restore(model, start_state)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return steps / (time.perf_counter() - start)


def pipeline_batches_per_second(dataset, batches: int) -> float:
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def codec_reads(root: Path, size: int, batch_size: int, repeat: int) -> None:
    """Chips/s reading back chips of each codec: ``read_chip`` alone, and the pipeline."""
    image = make_image(root / "codecs.tif", size)
    cadastre = make_cadastre(root / "codecs.gpkg", image, round(PARCELS_PER_MPX * size**2 / 1e6))
    chips = {}
    for codec in CODECS:
        out = root / f"chips-{codec}"
        tile([str(image)], str(out), labels=str(cadastre), boundary_width="1.5",
             keep_empty=1.0, val_fraction=0, compress=codec)  # fmt: skip
        chips[codec] = open_chips(out)
    files = len(chips[CODECS[0]].files["train"])
    batches = 3 * files // batch_size  # three epochs
    read, pipeline = dict.fromkeys(CODECS, 0.0), dict.fromkeys(CODECS, 0.0)
    for _ in range(repeat):  # alternate to share the machine's noise
        for codec, folder in chips.items():
            read[codec] = max(read[codec], read_chips_per_second(folder))
            dataset = make_dataset(folder, "train", batch_size, [0, 1], training=True, cache=False)
            rate = pipeline_batches_per_second(dataset.repeat(), batches) * batch_size
            pipeline[codec] = max(pipeline[codec], rate)
    print(f"\nreads per codec: {files} chips of 256 px (3-band uint8 image, 2-band mask), "
          f"{os.cpu_count()} CPUs, best of {repeat}")  # fmt: skip
    print("| codec | image KiB | mask KiB | read_chip chips/s (1 thread) | pipeline chips/s |")
    print("|---|---|---|---|---|")
    for codec, folder in chips.items():
        image_kib = folder_kib(folder.root / "images", files)
        mask_kib = folder_kib(folder.root / "masks", files)
        print(f"| {codec} | {image_kib:.1f} | {mask_kib:.1f} | {read[codec]:.0f} "
              f"| {pipeline[codec]:.0f} |")  # fmt: skip


def read_chips_per_second(chips, passes: int = 3) -> float:
    """Chips/s of ``read_chip`` over every training chip, ``passes`` times, on one thread."""
    files = chips.files["train"]
    start = time.perf_counter()
    for _ in range(passes):
        for image, mask in files:
            read_chip(image, mask, [0, 1])
    return passes * len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--filters", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--quick", action="store_true", help="small scene, few steps")
    parser.add_argument("--codecs-only", action="store_true", help="only the reads per codec")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.repeat, args.filters = 1024, 5, 1, [8]

    if args.codecs_only:  # bench_tile.py prints this table
        with tempfile.TemporaryDirectory() as tmp:
            codec_reads(Path(tmp), args.size, args.batch_size, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        chips = open_chips(synthetic_chips(Path(tmp), args.size))
        pipelines = {
            f"chips cache={cache}": make_dataset(
                chips, "train", args.batch_size, [1], training=True, cache=cache
            ).repeat()
            for cache in (False, True)
        }
        train = pipelines["chips cache=False"]
        batch = next(iter(train))
        # Same element spec as the pipeline (unknown batch dimension), so no retracing.
        memory = tf.data.Dataset.from_tensor_slices(batch).repeat().batch(args.batch_size)
        memory = memory.prefetch(2)
        print(
            f"{len(chips.files['train'])} train chips of {chips.chip_size} px, "
            f"batch {args.batch_size}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}"
        )
        rate = pipeline_batches_per_second(train, 4 * args.steps)
        print(f"pipeline alone: {rate:.1f} batches/s ({rate * args.batch_size:.0f} chips/s)")
        for filters in args.filters:
            model = build_unet(UNetConfig(3, 1, depth=4, base_filters=filters))
            model.compile(
                "adam", SegmentationLoss(pos_weights=[20.0]), metrics=training_metrics(["boundary"])
            )
            runs = {"memory": memory, **pipelines}
            for dataset in runs.values():  # trace, warm up, fill the cache
                steps_per_second(model, dataset, 8)
            state = snapshot(model)
            best = dict.fromkeys(runs, 0.0)
            for _ in range(args.repeat):  # alternate to share the machine's noise
                for name, dataset in runs.items():
                    best[name] = max(
                        best[name], steps_per_second(model, dataset, args.steps, state)
                    )
            line = ", ".join(
                f"{name} {rate:.2f} steps/s ({rate / best['memory']:.3f})"
                for name, rate in best.items()
            )
            print(f"base filters {filters:>3}: {line}")
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
