"""Benchmark mutually exclusive classes: a softmax model against sigmoids + argmax.

The real case is a crop-type map of the Danish parcels (``../shared/data/denmark_s2_parcels``,
Sentinel-2 blue/green/red at 10 m, one date): each parcel of the register carries its crop
(``Afgroede``); the most frequent crops are the classes, every other pixel (other crops, roads,
the village) is background. Two variants, trained on the same chips with the same epochs, seed
and network:

- ``multiclass``: ``geoseg train --task multiclass``, one softmax over background and the
  crops; the class map is ``predict --class-map``;
- ``multilabel+argmax``: ``geoseg train`` (a sigmoid per crop, thresholds tuned on val); a pixel
  takes the crop of highest probability among those at or above their threshold, background
  where none is.

Spatial split as in bench_parcels.py: the western half of the image trains (with validation
blocks inside it), the eastern half is predicted and scored with ``geoseg evaluate`` (confusion
matrix, per-class IoU and mean IoU over the crops) against the register.

Run ``.venv/bin/python benchmarks/bench_multiclass.py [--epochs N] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from bench_parcels import DATA, add_training_arguments, split_image

import geoseg
from geoseg.contracts import CLASS_MAP_NODATA, ClassMapTags, PredictionTags, read_model_card

CROPS = ("Vårbyg", "Græs med kløver/lucerne", "Silomajs", "Vinterbyg")
"""Spring barley, grass with clover/lucerne, silage maize, winter barley: the four crops with
the largest area in the image (76, 49, 34 and 9 parcels)."""
FIELD = "Afgroede"


def argmax_class_map(probabilities: Path, out: Path) -> Path:
    """The class map of a multilabel prediction: the likeliest class at or above its
    threshold, background (0) where no class reaches its threshold."""
    tags = PredictionTags.read(probabilities)
    with rasterio.open(probabilities) as src:
        levels = src.read()
        valid = src.dataset_mask() > 0
        profile = src.profile
    cutoffs = np.array([round(255 * tags.thresholds[c]) for c in tags.classes])[:, None, None]
    reached = np.where(levels >= cutoffs, levels.astype(np.int16), -1)
    codes = np.where(reached.max(axis=0) >= 0, reached.argmax(axis=0) + 1, 0).astype(np.uint8)
    codes[~valid] = CLASS_MAP_NODATA
    profile.update(count=1, dtype="uint8", nodata=CLASS_MAP_NODATA, driver="GTiff")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.update_tags(**ClassMapTags(("background", *tags.classes)).to_tags())
    return out


def run(args, root: Path) -> list[dict]:
    folder = DATA / "denmark_s2_parcels"
    if not folder.is_dir():
        raise SystemExit(f"sample data not available: {folder}")
    parcels = folder / "parcels.shp"
    west, east = split_image(folder / "image.tif", root)
    chips = root / "chips"
    geoseg.tile(
        [str(west)], str(chips), labels=str(parcels), class_field=FIELD, classes=list(CROPS),
        size=args.chip, stride=args.chip // 2, keep_empty=1.0, val_fraction=0.2, seed=args.seed,
        overwrite=True,
    )  # fmt: skip
    rows = []
    for variant in ("multiclass", "multilabel+argmax"):
        model = root / f"model-{variant}"
        task = "multiclass" if variant == "multiclass" else "multilabel"
        started = time.perf_counter()
        geoseg.train(
            chips, model, task=task, epochs=args.epochs, seed=args.seed, depth=args.depth,
            base_filters=args.base_filters, batch_size=8, patience=args.epochs,
            mixed_precision="off", epoch_chips=0, overwrite=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        pred, class_map = root / f"pred-{task}.tif", root / f"classes-{task}.tif"
        geoseg.predict(
            east, model, pred, class_map=class_map if task == "multiclass" else None,
            device="cpu", mixed_precision="off", overwrite=True,
        )  # fmt: skip
        if task == "multilabel":
            argmax_class_map(pred, class_map)
        confusion = geoseg.evaluate(class_map, parcels, class_field=FIELD).confusion
        card = read_model_card(model)
        rows.append(
            {
                "variant": variant,
                "mean_iou": confusion["mean_iou"],
                "pixel_accuracy": confusion["pixel_accuracy"],
                "iou": {c: confusion["per_class"][c]["iou"] for c in confusion["classes"]},
                "matrix": confusion["matrix"],
                "train_seconds": seconds,
                "epochs_run": card["training"]["epochs_run"],
            }
        )
        print(describe(rows[-1]), flush=True)
    return rows


def describe(row: dict) -> str:
    ious = "".join(f"{value:>10.3f}" for value in row["iou"].values())
    return (
        f"{row['variant']:<20}{ious}{row['mean_iou']:>10.3f}{row['pixel_accuracy']:>10.3f}"
        f"{row['train_seconds']:>9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser, epochs=50)
    args = parser.parse_args()
    print(
        f"crop types of the Danish register: train west half, score east half; {args.epochs} "
        f"epochs, seed {args.seed}, U-Net depth {args.depth} base {args.base_filters}, "
        f"{args.chip} px chips every {args.chip // 2} px"
    )
    names = ["background", *CROPS]
    print(
        f"{'variant':<20}" + "".join(f"{n[:9]:>10}" for n in names) + f"{'mean IoU':>10}"
        f"{'pixel acc':>10}{'train s':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = run(args, root)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
