"""Benchmark keras.applications encoders: size, raw forward chips/s on CPU, a short training.

* forward (default): per encoder (geoseg's own ``unet`` first, as the baseline), the parameters
  of the U-Net (encoder and all) and of the encoder alone, and the raw forward chips/s at
  256 x 256 px, 3 bands, 2 classes, decoder base 32, float32 on the CPU: the model runs in a
  ``tf.function`` with a fixed batch shape on a batch already in memory, traced and warmed up
  first; the figure is the best of ``--repeat`` timed runs of ``--steps`` calls each.
* ``--train``: the validation F1 of each encoder after the same number of epochs on
  ``../shared/data/atlanta_rgbnir`` (4 bands R, G, B, NIR; buildings), tiled into 64-px chips,
  trained from random weights (``encoder_weights="none"``: no pretrained weights can be fetched
  on this machine), same seed, batch and learning rate for every encoder. The dataset is tiny,
  so the figures compare encoders under one short schedule; they do not rank them in general.

Run ``.venv/bin/python benchmarks/bench_encoders.py [--encoders unet mobilenetv2 ...]
[--train --epochs 10] [--json PATH]``. One encoder at a time, in one process; nothing here
asserts on time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ATLANTA = SHARED_DATA / "atlanta_rgbnir"


def default_encoders() -> list[str]:
    from geoseg.models.config import UNET
    from geoseg.models.encoders import ENCODERS

    return [UNET, *ENCODERS]


def build(encoder: str, bands: int, classes: int, base_filters: int):
    """An untrained U-Net under ``encoder`` (``unet``: geoseg's own, depth 4)."""
    import keras

    from geoseg.models.config import UNetConfig
    from geoseg.models.unet import build_model

    keras.utils.set_random_seed(0)
    return build_model(UNetConfig(bands, classes, base_filters=base_filters, encoder=encoder))


def forward_rate(model, batch: int, size: int, steps: int, repeat: int) -> float:
    """Best chips/s of a fixed-shape tf.function over ``repeat`` runs of ``steps`` calls."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch, size, size, model.input_shape[-1]), tf.float32)
    run = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    chips = tf.random.uniform(spec.shape)
    with tf.device("/CPU:0"):
        for _ in range(2):
            run(chips).numpy()  # trace, then warm up
        best = 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(steps):
                run(chips).numpy()
            best = max(best, steps * batch / (time.perf_counter() - start))
    return best


def forward_rows(args) -> list[dict]:
    print("| encoder | parameters (M) | encoder (M) | chips/s | vs unet |")
    print("|---|---|---|---|---|")
    rows, baseline = [], None
    for encoder in args.encoders:
        model = build(encoder, 3, 2, args.base_filters)
        encoder_params = model.get_layer("encoder").count_params() if encoder != "unet" else None
        rate = forward_rate(model, args.batch, args.size, args.steps, args.repeat)
        baseline = rate if encoder == "unet" else baseline
        row = {
            "encoder": encoder,
            "parameters": model.count_params(),
            "encoder_parameters": encoder_params,
            "chips_per_s": rate,
        }
        rows.append(row)
        share = f"{rate / baseline:.2f}x" if baseline else "-"
        params = f"{encoder_params / 1e6:.1f}" if encoder_params is not None else "-"
        print(f"| {encoder} | {row['parameters'] / 1e6:.1f} | {params} | {rate:.2f} | {share} |",
              flush=True)  # fmt: skip
        del model
    return rows


def tile_atlanta(root: Path, chip: int) -> Path:
    from geoseg.tiling.tiler import tile

    summary = tile(
        [str(ATLANTA / "image.tif")], str(root / "chips"),
        labels=str(ATLANTA / "buildings.geojson"), size=chip, keep_empty=1.0, max_nodata=1.0,
        val_fraction=0.25, seed=0,
    )  # fmt: skip
    print(f"\natlanta_rgbnir: {summary.written} chips of {chip} px")
    return root / "chips"


def train_rows(args) -> list[dict]:
    from geoseg.training.trainer import train

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        chips = tile_atlanta(Path(tmp), args.chip)
        print(f"{args.epochs} epochs, batch {args.train_batch}, lr {args.lr:g}, base "
              f"{args.train_filters}, float32, random initial weights")  # fmt: skip
        print("| encoder | val F1 | val IoU | best epoch | seconds |")
        print("|---|---|---|---|---|")
        for encoder in args.encoders:
            options = {} if encoder == "unet" else {"encoder_weights": "none"}
            summary = train(
                chips, Path(tmp) / f"model-{encoder}", encoder=encoder, epochs=args.epochs,
                batch_size=args.train_batch, lr=args.lr, base_filters=args.train_filters,
                depth=4, patience=args.epochs, mixed_precision="off", seed=0, **options,
            )  # fmt: skip
            card = summary.card
            name, scores = next(iter(card["metrics"]["val"].items()))
            row = {
                "encoder": encoder,
                "target": name,
                "val_f1": scores["f1"],
                "val_iou": scores["iou"],
                "best_epoch": card["training"]["best_epoch"],
                "seconds": summary.seconds,
            }
            rows.append(row)
            print(f"| {encoder} | {row['val_f1']:.3f} | {row['val_iou']:.3f} | "
                  f"{row['best_epoch']} | {row['seconds']:.0f} |", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=None, help="default: unet and all")
    parser.add_argument("--batch", type=int, default=4, help="forward batch")
    parser.add_argument("--size", type=int, default=256, help="forward chip side (px)")
    parser.add_argument("--steps", type=int, default=3, help="forward calls per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (best is kept)")
    parser.add_argument("--base-filters", type=int, default=32, help="decoder base filters")
    parser.add_argument("--no-forward", action="store_true", help="skip the forward part")
    parser.add_argument("--train", action="store_true", help="also train on atlanta_rgbnir")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--chip", type=int, default=64, help="training chip side (px)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-filters", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args()
    args.encoders = args.encoders or default_encoders()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # CPU figures, wherever this runs
    machine = (
        f"{os.cpu_count()} cores, TensorFlow {tf.__version__}, python {sys.version.split()[0]}"
    )
    day = datetime.date.today().isoformat()
    print(f"{machine}; {day}")
    results: dict = {"machine": machine, "date": day}
    if not args.no_forward:
        print(f"\nforward: {args.size} x {args.size} px, 3 bands, 2 classes, batch {args.batch}, "
              f"decoder base {args.base_filters}, float32, CPU, best of {args.repeat}")  # fmt: skip
        results["forward"] = {
            "size": args.size, "batch": args.batch, "base_filters": args.base_filters,
            "rows": forward_rows(args),
        }  # fmt: skip
    if args.train:
        results["train"] = {
            "data": "atlanta_rgbnir", "chip": args.chip, "epochs": args.epochs,
            "encoder_weights": "none", "rows": train_rows(args),
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
