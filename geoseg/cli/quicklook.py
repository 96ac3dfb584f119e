"""``geoseg quicklook``: a PNG preview of a prediction."""

from __future__ import annotations

import click

from geoseg.cli.options import file_out_option, overwrite_option


@click.command()
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
