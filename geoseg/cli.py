"""The ``geoseg`` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import click

from geoseg import __version__
from geoseg.errors import GeosegError, first_line
from geoseg.options import (
    LengthType,
    NameListType,
    fraction,
    out_option,
    overwrite_option,
    parallel_options,
    seed_option,
)


class GeosegGroup(click.Group):
    """Turns library errors into one-line messages and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        from rasterio.errors import RasterioError

        try:
            return super().invoke(ctx)
        except (GeosegError, RasterioError, OSError) as exc:
            raise click.ClickException(first_line(exc)) from None


@contextmanager
def progress_bar(description: str):
    """A rich progress bar on a terminal (silent otherwise); yields a ``progress(done, total)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=console, disable=not console.is_terminal, transient=True
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--verbose", "-v", is_flag=True, help="Log what happens, step by step.")
def main(verbose: bool):
    """Segment very large satellite and aerial images.

    \b
    Examples:
      $ geoseg synth --out scene/
      $ geoseg tile scene/image.tif --labels scene/parcels.gpkg --boundary-width 1px --out chips/
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


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
    type=click.FloatRange(min=0, min_open=True),
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
@overwrite_option
def synth(out, **options):
    """Write a synthetic cadastre scene: image.tif, parcels.gpkg, buildings.gpkg.

    \b
    Examples:
      $ geoseg synth --out scene/ --size 4096 --seed 1
      $ geoseg synth --out scene16/ --bands 4 --dtype uint16 --crs EPSG:25832
    """
    from geoseg.synth import synth as run

    with progress_bar("rendering") as progress:
        summary = run(out, progress=progress, **options)
    click.echo(summary.describe())


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@out_option
@click.option(
    "--labels",
    type=click.Path(),
    default=None,
    help="Vector labels (GeoPackage, Shapefile, GeoJSON; any CRS) or a label raster.",
)
@click.option("--class-field", default=None, help="Attribute holding each feature's class.")
@click.option(
    "--classes",
    type=NameListType(),
    default=None,
    help="Classes to keep, in band order, e.g. building,road.",
)
@click.option(
    "--boundary-width",
    type=LengthType(),
    default=None,
    help="Also burn outlines as class 'boundary', in CRS units or pixels (2px).",
)
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
    help="Share of spatial blocks assigned to validation.",
)
@seed_option
@parallel_options
@overwrite_option
def tile(images, out, **options):
    """Cut rasters into georeferenced chips with masks burned from labels.

    Writes images/, masks/, chips.gpkg (chip footprints and split) and dataset.json
    (band statistics, classes, class frequencies) into the --out folder.

    \b
    Examples:
      $ geoseg tile ortho.tif --labels parcels.gpkg --boundary-width 1px --out chips/
      $ geoseg tile a.tif b.tif --labels roofs.shp --class-field type --classes house,shed \\
            --size 512 --stride 256 --out chips/
      $ geoseg tile big.tif --labels parcels.gpkg --scheduler tcp://10.0.0.5:8786 --out chips/
    """
    from geoseg.tiling import tile as run

    with progress_bar("tiling") as progress:
        summary = run(images, out, progress=progress, **options)
    click.echo(summary.describe())


if __name__ == "__main__":
    main()
