"""``geoseg tile``: chips and masks from rasters and labels."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    LengthType,
    class_field_option,
    classes_option,
    fraction,
    label_nodata_option,
    out_option,
    overwrite_option,
    parallel_options,
    seed_option,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
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
    "--sparse-labels",
    type=LengthType(),
    default=None,
    metavar="REACH",
    help="The vector labels leave features undrawn (a few fields among many): pixels farther "
    "than REACH (CRS units or pixels, 3px) from every drawn feature are ignored in training "
    "instead of background.",
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
      $ geoseg tile s2.tif --labels some_fields.gpkg --boundary-width 1px --distance \\
            --sparse-labels 3px --out chips/
    """
    from geoseg.tiling.tiler import tile as run

    with progress_bar("tiling") as progress:
        summary = run(images, out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))
