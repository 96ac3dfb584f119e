"""The ``geoseg`` group: shared options, one-line errors, and its commands (one module each)."""

from __future__ import annotations

import click

from geoseg.cli.evaluate import evaluate
from geoseg.cli.options import with_flags
from geoseg.cli.predict import predict
from geoseg.cli.quicklook import quicklook
from geoseg.cli.run import run_pipeline
from geoseg.cli.search import search
from geoseg.cli.stack import stack
from geoseg.cli.synth import synth
from geoseg.cli.terminal import setup_logging
from geoseg.cli.tile import tile
from geoseg.cli.train import train
from geoseg.cli.vectorize import vectorize
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


main.add_command(synth)
main.add_command(search)
main.add_command(stack)
main.add_command(tile)
main.add_command(train)
main.add_command(predict)
main.add_command(vectorize)
main.add_command(evaluate)
main.add_command(quicklook)
main.add_command(run_pipeline)
