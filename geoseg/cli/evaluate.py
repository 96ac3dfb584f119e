"""``geoseg evaluate``: scores of a prediction against the truth."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    LengthType,
    block_size_option,
    class_field_option,
    classes_option,
    label_nodata_option,
    overwrite_option,
    parallel_options,
    threshold_option,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
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
@click.option(
    "--sparse-truth",
    type=LengthType(),
    default=None,
    metavar="REACH",
    help="Polygons: the truth draws a few objects among many; predicted objects lying mostly "
    "farther than REACH (CRS units or px, e.g. 3px) from every true one are not scored.",
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
      $ geoseg evaluate parcels_pred.gpkg --truth some_fields.gpkg --sparse-truth 3px
      $ geoseg evaluate pred.tif --truth roofs.shp --class-field type
      $ geoseg evaluate crops.tif --truth parcels.shp --class-field Afgroede --json crops.json
    """
    from geoseg.evaluation.evaluator import evaluate as run

    with progress_bar("evaluating") as progress:
        result = run(prediction, progress=progress, **options)
    click.echo(with_flags(result.describe()))
