"""Benchmark the training input pipeline: steps/s from chips on disk vs one batch in memory.

All runs train the same compiled model in the same process with the same batch size; the
in-memory run repeats a single batch taken from the pipeline, so it measures the model alone.
The ratio (chips / memory) shows whether reading, normalising and augmenting chips slows
training down, for chips decoded every epoch (``cache=False``, large datasets) and decoded
once and kept in memory (``cache=True``, the default below 1 GiB). The pipeline alone (no
model) is also timed, to show its headroom for faster accelerators.
Run ``.venv/bin/python benchmarks/bench_train_input.py [--quick]``.
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
from scenes import synthetic_chips  # noqa: E402

from geoseg.data import make_dataset, open_chips  # noqa: E402
from geoseg.losses import SegmentationLoss, training_metrics  # noqa: E402
from geoseg.model import UNetConfig, build_unet  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--filters", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--quick", action="store_true", help="small scene, few steps")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.repeat, args.filters = 1024, 5, 1, [8]

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
