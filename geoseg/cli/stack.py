"""``geoseg stack``: the bands of several rasters as one VRT."""

from __future__ import annotations

import click

from geoseg.cli.options import file_out_option, overwrite_option


@click.command()
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
