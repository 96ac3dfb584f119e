"""Click options and parameter types shared by several commands."""

from __future__ import annotations

import click

from geoseg.errors import ParameterError


class LengthType(click.ParamType):
    """A distance in CRS units (``1.5``) or in pixels (``2px``)."""

    name = "length"

    def convert(self, value, param, ctx):
        from geoseg.labels import Length

        if isinstance(value, Length):
            return value
        try:
            return Length.parse(value)
        except ParameterError as exc:
            self.fail(str(exc), param, ctx)


class NameListType(click.ParamType):
    """A comma-separated list of names: ``a,b,c``."""

    name = "names"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not names:
            self.fail("expected comma-separated names, e.g. building,road", param, ctx)
        return names


fraction = click.FloatRange(0.0, 1.0)

out_option = click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=True, file_okay=False),
    help="Output folder.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace an existing output instead of refusing."
)
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for the local Dask scheduler [default: all cores].",
)
scheduler_option = click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    help="Run on a dask.distributed cluster, e.g. tcp://10.0.0.5:8786 (shared paths).",
)


def parallel_options(f):
    """``--workers`` and ``--scheduler``, which exclude each other."""
    return workers_option(scheduler_option(f))
