"""``geoseg vectorize``: polygons from a probability raster or a class map."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    block_size_option,
    file_out_option,
    overwrite_option,
    parallel_options,
    polygon_options,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
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
      $ geoseg vectorize pred.tif --out parcels.gpkg --mode parcels --join 0   # no joins
      $ geoseg vectorize pred.tif --out buildings.parquet
      $ geoseg vectorize crops.tif --out crops.gpkg --min-area 100    # a class map
    """
    from geoseg.delineation.vectorizing import vectorize as run

    with progress_bar("vectorizing") as progress:
        summary = run(raster, out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))
