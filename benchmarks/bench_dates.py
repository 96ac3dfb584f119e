"""Benchmark several dates: one date, the other, both stacked as bands, and their consensus.

Real case: ``../shared/data/magdeburg_s2_fields``, Sentinel-2 monthly composites of June and
August 2021 (red, green, blue, NIR, one file per band, int16, nodata -10000) and hand-drawn
fields. Labels are sparse (most fields of the image are not drawn), so chips are cut only where
the 20 ``train20`` fields are (no empty chips), and only the recall of the 30 ``validation``
fields is meaningful: a field found at IoU >= 0.5, one to one. Boundary F1 (1 px) is reported
against the validation fields' outlines, so boundaries of undrawn fields count against every
variant alike. Each variant trains the multi-task recipe (extent, boundary, distance) with the
same chips, epochs, seed and network (one model; ``--defaults``: ``geoseg train``'s own
network, epochs, early stopping and folds):

- ``june``, ``august``: a 4-band model of that date, predicting that date;
- ``stack``: an 8-band model on June and August stacked (FTW's input), predicting the stack;
- ``consensus``: a 4-band model trained on the chips of both dates, predicting June and August
  and taking the per-pixel mean of their probabilities (``predict --dates``).

Run ``.venv/bin/python benchmarks/bench_dates.py [--epochs N | --defaults] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_parcels import DATA, add_training_arguments, predict_and_score

import geoseg
from geoseg.io.stack import write_stack

BANDS = ("red", "green", "blue", "nir")
MONTHS = {"june": "0615", "august": "0815"}


def date_stack(folder: Path, month: str, out: Path) -> Path:
    """The four bands of one month as one VRT."""
    files = [folder / f"s2_l3a_2021{MONTHS[month]}_{band}.tif" for band in BANDS]
    return write_stack(files, out, overwrite=True)


def generic_names(vrt: Path) -> Path:
    """The same VRT with its bands named red, green, blue, nir (one model reads both dates)."""
    text = vrt.read_text()
    for month in MONTHS.values():
        for band in BANDS:
            text = text.replace(f"<Description>s2_l3a_2021{month}_{band}</Description>",
                                f"<Description>{band}</Description>")  # fmt: skip
    vrt.write_text(text)
    return vrt


def run(args, root: Path) -> list[dict]:
    folder = DATA / "magdeburg_s2_fields"
    if not folder.is_dir():
        raise SystemExit(f"sample data not available: {folder}")
    bands, fields = folder / "s2_l3a_data", folder / "fields"
    train, truth = (
        fields / "magdeburger_boerde_train20.shp",
        fields / "magdeburger_boerde_validation.shp",
    )
    dates = {m: generic_names(date_stack(bands, m, root / f"{m}.vrt")) for m in MONTHS}
    every_band = [bands / f"s2_l3a_2021{m}_{b}.tif" for m in MONTHS.values() for b in BANDS]
    season = write_stack(every_band, root / "season.vrt", overwrite=True)
    inputs = {
        "june": ([dates["june"]], [dates["june"]]),
        "august": ([dates["august"]], [dates["august"]]),
        "stack": ([season], [season]),
        "consensus": ([dates["june"], dates["august"]], [dates["june"], dates["august"]]),
    }
    rows = []
    for variant in args.variants:
        scenes, predicted = inputs[variant]
        chips = root / f"chips-{variant}"
        geoseg.tile(
            [str(s) for s in scenes], str(chips), labels=str(train), boundary_width="1px",
            distance=True, size=args.chip, stride=args.chip // 2, keep_empty=0.0,
            val_fraction=0.2, seed=args.seed, overwrite=True, sparse_labels=args.sparse_labels,
        )  # fmt: skip
        model = root / f"model-{variant}"
        started = time.perf_counter()
        pinned = dict(
            epochs=args.epochs, base_filters=args.base_filters, depth=args.depth, batch_size=8,
            patience=args.epochs, mixed_precision="off", folds=1, epoch_chips=0,
        )  # fmt: skip
        given = {} if args.defaults else pinned
        geoseg.train(chips, model, seed=args.seed, overwrite=True, **given)
        seconds = time.perf_counter() - started
        pred, polygons = root / f"pred-{variant}.tif", root / f"parcels-{variant}.gpkg"
        image = predicted if len(predicted) > 1 else predicted[0]
        objects, boundary = predict_and_score(image, model, pred, polygons, truth)
        rows.append(
            {
                "variant": variant,
                "true": objects["true"],
                "matched": objects["matched"],
                "recall": objects["recall"],
                "boundary_f1_1px": boundary.get("f1", float("nan")),
                "train_chips": json.loads((chips / "dataset.json").read_text())["counts"]["train"],
                "train_seconds": seconds,
            }
        )
        print(describe(rows[-1]), flush=True)
    return rows


def describe(row: dict) -> str:
    return (
        f"{row['variant']:<12}{row['matched']:>8}{row['true']:>6}{row['recall']:>8.3f}"
        f"{row['boundary_f1_1px']:>12.3f}{row['train_chips']:>7}{row['train_seconds']:>9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["june", "august", "stack", "consensus"])
    add_training_arguments(parser, epochs=30)
    parser.add_argument(
        "--sparse-labels",
        default=None,
        metavar="REACH",
        help="tile --sparse-labels: pixels beyond REACH of a drawn field are ignored, e.g. 3px",
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="train with geoseg train's defaults (network, epochs, early stopping, folds)",
    )
    args = parser.parse_args()
    network = (
        "geoseg train's defaults"
        if args.defaults
        else f"{args.epochs} epochs, U-Net depth {args.depth} base {args.base_filters}"
    )
    print(
        f"Magdeburg fields: train on train20, recall of the 30 validation fields; {network}, "
        f"seed {args.seed}, {args.chip} px chips every {args.chip // 2} px"
        + (f", sparse labels (reach {args.sparse_labels})" if args.sparse_labels else "")
    )
    print(f"{'variant':<12}{'matched':>8}{'true':>6}{'recall':>8}{'bdry F1 1px':>12}"
          f"{'chips':>7}{'train s':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = run(args, root)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
