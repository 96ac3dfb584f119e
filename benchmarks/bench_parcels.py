"""Benchmark parcel delineation recipes: one polygon per real parcel, on real and synthetic land.

Three recipes, trained with the same chips, epochs, seed and network on the same pixels:

- (a) ``boundary``: the boundary class alone, parcels enclosed by it (closing small gaps);
- (b) ``extent+boundary``: field extent and boundary, parcels grown from markers inside the
  extent (the watershed of 1 - boundary);
- (c) ``extent+boundary+distance``: the same with the distance target, watershed of the
  distance.

Spatial split: each scene is cut at its middle column; chips of the western half train the
model (with validation blocks inside it, which also tune the thresholds), the eastern half is
predicted and scored. The truth is clipped to the eastern half, so parcels cut by the split count
by their visible part. Scores: objects matched one to one at IoU >= 0.5 (precision, recall, F1),
boundary F1 within 1 px, and the share of predicted parcel area outside every true parcel; ``fit``
is the object F1 of the training areas (the card's fit report, plain prediction).

Scenes: ``denmark`` (``../shared/data/denmark_s2_parcels``: Sentinel-2 at 10 m, 276 parcels of
the Danish register, a village and farmyards that are not parcels) and ``synthetic`` (a
``geoseg synth`` scene with non-field land).

``--starts scratch synthetic`` adds the fine-tuning row: a model of the same settings and seed
pretrained on a synthetic scene like the Danish one (10 m, uint16, blue, green, red), then
trained on the scene's chips from those weights (``train --init-from``).

Run ``.venv/bin/python benchmarks/bench_parcels.py [--scenes denmark synthetic] [--epochs N]``;
with ``--workdir DIR`` each seed's chips, models, predictions and parcels stay in ``DIR/seed{N}/``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the CLI: no oneDNN notes

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio.windows import Window  # noqa: E402

import geoseg  # noqa: E402
from geoseg.contracts import read_model_card  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RECIPES = {
    "a": ("boundary",),
    "b": ("parcels", "boundary"),
    "c": ("parcels", "boundary", "distance"),
}
RECIPE_NAMES = {"a": "boundary", "b": "extent+boundary", "c": "extent+boundary+distance"}


def split_image(image: Path, out: Path) -> tuple[Path, Path]:
    """The western and eastern halves of ``image`` as GeoTIFFs (cut at the middle column)."""
    out.mkdir(parents=True, exist_ok=True)
    halves = []
    with rasterio.open(image) as src:
        middle = src.width // 2
        for name, window in (
            ("west", Window(0, 0, middle, src.height)),
            ("east", Window(middle, 0, src.width - middle, src.height)),
        ):
            profile = {
                **src.profile,
                "width": int(window.width),
                "height": int(window.height),
                "transform": src.window_transform(window),
                "tiled": True,
                "blockxsize": 256,
                "blockysize": 256,
                "compress": "deflate",
            }
            path = out / f"{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.descriptions = src.descriptions
            halves.append(path)
    return halves[0], halves[1]


def clipped_truth(parcels: Path, image: Path, out: Path, min_pixels: float = 4.0) -> Path:
    """The parcels' parts inside ``image``, without slivers under ``min_pixels`` pixels."""
    truth = gpd.read_file(parcels)
    with rasterio.open(image) as src:
        box, pixel_area = shapely.box(*src.bounds), abs(src.res[0] * src.res[1])
        truth = truth.to_crs(src.crs)
    truth["geometry"] = truth.geometry.intersection(box)
    truth = truth.explode(index_parts=False)
    truth = truth[(truth.geom_type == "Polygon") & (truth.area >= min_pixels * pixel_area)]
    truth[["geometry"]].to_file(out, engine="pyogrio")
    return out


def outside_share(predicted: Path, truth: Path) -> float:
    """Share of the predicted parcels' area that lies outside every true parcel."""
    mine = gpd.read_file(predicted)
    if mine.empty:
        return 0.0
    theirs = shapely.union_all(gpd.read_file(truth).to_crs(mine.crs).geometry.to_numpy())
    total = float(mine.area.sum())
    inside = float(shapely.area(shapely.intersection(mine.geometry.to_numpy(), theirs)).sum())
    return (total - inside) / total if total else 0.0


def prepare_scene(name: str, root: Path, seed: int) -> tuple[Path, Path]:
    """The image and parcel file of a scene."""
    if name == "denmark":
        folder = DATA / "denmark_s2_parcels"
        if not folder.is_dir():
            raise SystemExit(f"sample data not available: {folder}")
        return folder / "image.tif", folder / "parcels.shp"
    scene = root / "synthetic-scene"
    # 5 m pixels: fields of 0.6-5 ha are 15-45 px across, as at 10 m in Denmark for larger ones
    geoseg.synth(str(scene), size=512, resolution=5.0, seed=seed, buildings=False, overwrite=True)
    return scene / "image.tif", scene / "parcels.gpkg"


def pretrained_parent(root: Path, args, chosen: dict, recipe: str) -> Path:
    """A model trained on a synthetic scene like the Danish one (10 m, uint16, blue, green,
    red, non-field land) with this run's settings: the parent that ``--starts synthetic``
    fine-tunes (``train --init-from``)."""
    folder = root / "pretrain"
    scene = folder / "scene"
    geoseg.synth(str(scene), size=512, resolution=10.0, dtype="uint16", seed=args.seed + 100,
                 band_order="blue,green,red", buildings=False, overwrite=True)  # fmt: skip
    image = scene / "image.tif"
    chips = folder / "chips"
    geoseg.tile([str(image)], str(chips), labels=str(scene / "parcels.gpkg"),
                boundary_width=args.boundary_width, distance=True, size=args.chip,
                stride=args.stride, keep_empty=1.0, seed=args.seed, overwrite=True)  # fmt: skip
    model = folder / f"model-{recipe}"
    geoseg.train(chips, model, classes=list(RECIPES[recipe]), seed=args.seed,
                 folds=folds(args), overwrite=True, **chosen)  # fmt: skip
    return model


def folds(args) -> int | str:
    """``train --folds`` of this run: as given, else 1, or train's own with ``--defaults``."""
    if args.folds is None:
        return "auto" if args.defaults else 1
    return args.folds if args.folds == "auto" else int(args.folds)


def run_scene(name: str, args, root: Path) -> list[dict]:
    image, parcels = prepare_scene(name, root, args.seed)
    west, east = split_image(image, root / name)
    truth = clipped_truth(parcels, east, root / name / "truth-east.gpkg")
    chips = root / name / "chips"
    geoseg.tile(
        [str(west)],
        str(chips),
        labels=str(parcels),
        boundary_width=args.boundary_width,
        distance=True,
        size=args.chip,
        stride=args.stride,
        keep_empty=1.0,
        val_fraction=0.0 if folds(args) not in (1, "auto") else args.val_fraction,  # pooled
        seed=args.seed,
        overwrite=True,
    )
    rows = []
    for recipe, start in ((r, s) for r in args.recipes for s in args.starts):
        chosen = dict(
            epochs=args.epochs, base_filters=args.base_filters, depth=args.depth, batch_size=8,
            patience=args.epochs, mixed_precision="off", encoder=args.encoder,
            encoder_weights=args.encoder_weights, epoch_chips=0,
        )  # fmt: skip
        given = {
            k: getattr(args, k)
            for k in ("patience", "jitter", "epoch_chips")
            if getattr(args, k) is not None
        }
        chosen.update(given)
        settings = given if args.defaults else chosen
        if start == "synthetic":
            settings = {**settings, "init_from": str(pretrained_parent(root, args, settings,
                                                                        recipe))}  # fmt: skip
        started = time.perf_counter()
        model = root / name / f"model-{recipe}-{start}"
        geoseg.train(
            chips, model, classes=list(RECIPES[recipe]), seed=args.seed, folds=folds(args),
            overwrite=True, **settings,
        )  # fmt: skip
        trained = time.perf_counter() - started
        card = read_model_card(model)
        for tta in (False, True):
            pred = root / name / f"pred-{recipe}-{start}{'-tta' * tta}.tif"
            polygons = root / name / f"parcels-{recipe}-{start}{'-tta' * tta}.gpkg"
            objects, boundary = predict_and_score(east, model, pred, polygons, truth, tta)
            tuned = card.get("delineation", {})
            tuned = tuned.get("tta", tuned) if tta else tuned
            rows.append(
                {
                    "scene": name,
                    "seed": args.seed,
                    "recipe": recipe,
                    "start": start,
                    "targets": RECIPE_NAMES[recipe],
                    "tta": tta,
                    "folds": card["training"]["folds"],
                    "predicted": objects["predicted"],
                    "true": objects["true"],
                    "matched": objects["matched"],
                    "precision": objects["precision"],
                    "recall": objects["recall"],
                    "f1": objects["f1"],
                    "boundary_f1_1px": boundary.get("f1", float("nan")),
                    "outside_share": outside_share(polygons, truth),
                    "train_seconds": trained,
                    "val_boundary_f1": card["metrics"]["val"]["boundary"]["f1"],
                    "val_objects_f1": tuned.get("val_objects", {}).get("f1"),
                    "fit_objects_f1": card.get("delineation", {}).get("fit_objects", {}).get("f1"),
                    "delineation": tuned.get("thresholds"),
                }
            )
            print(describe(rows[-1]), flush=True)
    return rows


def predict_and_score(image, model: Path, pred: Path, polygons: Path, truth: Path, tta=False):
    """Predict parcels of ``image`` and score them: objects one to one at IoU >= 0.5, and the
    boundary F1 within 1 px."""
    geoseg.predict(image, model, pred, vectors=polygons, mode="parcels", device="cpu",
                   mixed_precision="off", overwrite=True, tta=tta)  # fmt: skip
    objects = geoseg.evaluate(polygons, truth).objects["parcel"]
    boundary = geoseg.evaluate(
        pred, truth, boundary_width="1px", boundary_tolerance="1px", classes=["boundary"]
    ).boundary
    return objects, boundary


def describe(row: dict) -> str:
    return (
        f"{row['scene']:<10}{row['seed']:>4}  ({row['recipe']}) {row['targets']:<26}"
        f"{row['start']:>10}"
        f"{'yes' if row['tta'] else 'no':>4}{row['predicted']:>6}"
        f"{row['true']:>6}{row['matched']:>7}{row['precision']:>10.3f}{row['recall']:>8.3f}"
        f"{row['f1']:>7.3f}{row['boundary_f1_1px']:>11.3f}{row['outside_share']:>9.1%}"
        f"{row['train_seconds']:>8.0f}{row['val_boundary_f1']:>8.3f}"
        f"{row['fit_objects_f1'] or float('nan'):>6.3f}  {row['delineation']}"
    )


def print_means(rows: list[dict]) -> None:
    """Mean, lowest and highest object F1 per scene, recipe and TTA over the seeds."""
    groups = {}
    for row in rows:
        key = (row["scene"], row["recipe"], row["start"], row["tta"])
        groups.setdefault(key, []).append(row["f1"])
    for (scene, recipe, start, tta), f1 in groups.items():
        if len(f1) > 1:
            print(
                f"{scene:<10}({recipe}) {start} tta {'yes' if tta else 'no':<4}object F1 mean "
                f"{sum(f1) / len(f1):.3f} over {len(f1)} seeds ({min(f1):.3f}-{max(f1):.3f})"
            )


def add_training_arguments(parser: argparse.ArgumentParser, epochs: int) -> None:
    """The options the accuracy benchmarks share: training length, chips, network, outputs."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--chip", type=int, default=64)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the outputs here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=["denmark", "synthetic"])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    add_training_arguments(parser, epochs=40)
    parser.add_argument(
        "--stride", type=int, default=None, help="chip stride (default: half a chip)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed")
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="share of the western chips for val"
    )
    parser.add_argument(
        "--boundary-width", default="1px", help="width of the boundary target (tile's option)"
    )
    parser.add_argument(
        "--folds",
        default=None,
        help="train --folds K or auto (default: 1, or train's own with --defaults)",
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="train with geoseg train's defaults (network, epochs, batch, early stopping)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="train --patience (default: --epochs, or train's own with --defaults)",
    )
    parser.add_argument(
        "--jitter", type=float, default=None, help="train --jitter (brightness and contrast)"
    )
    parser.add_argument(
        "--epoch-chips", type=int, default=None, help="train --epoch-chips (repeat small sets)"
    )
    parser.add_argument(
        "--starts",
        nargs="+",
        default=["scratch"],
        choices=["scratch", "synthetic"],
        help="synthetic: also fine-tune (train --init-from) a model pretrained on a synthetic "
        "scene like the scene (same settings and seed), beside training from scratch",
    )
    parser.add_argument("--encoder", default="unet", help="train --encoder (e.g. vgg16)")
    parser.add_argument(
        "--encoder-weights", default=None, help="train --encoder-weights (e.g. hed, none)"
    )
    args = parser.parse_args()
    args.stride = args.stride or args.chip // 2
    network = (
        "geoseg train's defaults"
        if args.defaults
        else f"{args.epochs} epochs"
        + (
            f", U-Net depth {args.depth}"
            if args.encoder == "unet"
            else f", {args.encoder} encoder ({args.encoder_weights or 'imagenet'} weights)"
        )
        + f" base {args.base_filters}"
    )
    print(
        f"train west half, score east half; {network}, seeds {args.seeds or [args.seed]}"
        + (f", folds {folds(args)}" if folds(args) != 1 else "")
        + f", {args.chip} px chips every "
        f"{args.stride} px; each model scored without and with --tta"
    )
    print(
        f"{'scene':<10}{'seed':>4}  {'recipe':<30}{'start':>10}{'tta':>4}{'pred':>6}{'true':>6}"
        f"{'match':>7}"
        f"{'precision':>10}{'recall':>8}{'F1':>7}{'bdry F1 1px':>11}{'outside':>9}{'train s':>8}"
        f"{'val bF1':>8}{'fit':>6}  delineation thresholds (tuned on val)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        for seed in args.seeds or [args.seed]:
            args.seed = seed
            for scene in args.scenes:
                rows += run_scene(scene, args, root / f"seed{seed}")
    print_means(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
