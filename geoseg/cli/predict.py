"""``geoseg predict``: probabilities, class maps and polygons from a model."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    block_size_option,
    file_out_option,
    mixed_precision_option,
    overwrite_option,
    parallel_options,
    polygon_options,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
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
