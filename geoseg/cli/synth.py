"""``geoseg synth``: a synthetic farmland scene with its parcels."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    FiniteRange,
    NameListType,
    out_option,
    overwrite_option,
    seed_option,
    with_flags,
)
from geoseg.cli.terminal import progress_bar


@click.command()
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
@click.option(
    "--band-order",
    type=NameListType(),
    default=None,
    metavar="NAMES",
    help="Write the bands in this order, e.g. blue,green,red for Sentinel-2's B2,B3,B4 "
    "(sets the band count; red, green, blue and optionally nir).",
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
      $ geoseg synth --out s2like/ --resolution 10 --dtype uint16 --band-order blue,green,red
    """
    from geoseg.synthetic.scene import synth as run

    with progress_bar("rendering") as progress:
        summary = run(out, progress=progress, **options)
    click.echo(with_flags(summary.describe()))
