"""Click options and parameter types shared by several commands, and the library's messages
written in their terms."""

from __future__ import annotations

import logging
import math

import click

from geoseg.errors import PARAMETER_NAME, ParameterError


def with_flags(text: str) -> str:
    """A library message with the `parameter` names it marks written as the options that set
    them: `split_by` -> --split-by."""
    return PARAMETER_NAME.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


class FlagsFormatter(logging.Formatter):
    """Log lines of the library, with parameter names written as options."""

    def format(self, record: logging.LogRecord) -> str:
        return with_flags(super().format(record))


class LengthType(click.ParamType):
    """A distance in CRS units (``1.5``) or in pixels (``2px``)."""

    name = "length"

    def convert(self, value, param, ctx):
        from geoseg.labels.masks import Length

        if isinstance(value, Length):
            return value
        try:
            return Length.parse(value)
        except ParameterError as exc:
            self.fail(with_flags(str(exc)), param, ctx)


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


class FiniteRange(click.FloatRange):
    """A float range that also refuses NaN and infinity (``nan`` passes every comparison)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


class AutoOrCount(click.IntRange):
    """``auto`` or a whole number from ``min`` up."""

    name = "auto|integer"

    def convert(self, value, param, ctx):
        if value == "auto":
            return value
        return super().convert(value, param, ctx)


fraction = FiniteRange(0.0, 1.0)


def label_nodata_option(what: str):
    """``--label-nodata``: the value of a label (or truth) raster to ignore."""
    return click.option(
        "--label-nodata",
        default="file",
        metavar="VALUE|none",
        help=f"{what} value to ignore; 'none': every value is a label "
        f"[default: the {what.lower()}'s own nodata].",
    )


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


def file_out_option(help: str):
    """``--out``/``-o`` naming an output file."""
    return click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help=help)


def block_size_option(default: int = 2048):
    """``--block-size``: pixels per side of the blocks processed in parallel."""
    return click.option(
        "--block-size",
        type=click.IntRange(min=64),
        default=default,
        show_default=True,
        help="Pixels per side of the blocks processed in parallel (memory grows with it).",
    )


def classes_option(help: str):
    """``--classes a,b``: class names, in order."""
    return click.option("--classes", type=NameListType(), default=None, help=help)


def class_field_option(help: str = "Attribute holding each feature's class."):
    """``--class-field NAME``: the vector attribute that holds classes."""
    return click.option("--class-field", default=None, help=help)


def threshold_option(help: str):
    """``--threshold P``: one probability threshold for every class."""
    return click.option(
        "--threshold", type=FiniteRange(0, 1, min_open=True), default=None, help=help
    )


def mixed_precision_option(help: str):
    """``--mixed-precision auto|on|off``."""
    return click.option(
        "--mixed-precision",
        type=click.Choice(["auto", "on", "off"]),
        default="auto",
        show_default=True,
        help=help,
    )


def level_option(name: str, help: str, min_open: bool = False):
    """An optional delineation level in [0, 1] (``min_open``: above 0) of predict and
    vectorize; unset, the model's tuned one applies."""
    return click.option(name, type=FiniteRange(0, 1, min_open=min_open), default=None, help=help)


def polygon_options(f):
    """``--threshold``, ``--mode``, ``--extent-threshold``, ``--marker-threshold``,
    ``--parcel-threshold``, ``--split``, ``--join``, ``--min-area`` and ``--simplify`` of
    predict and vectorize."""
    options = [
        threshold_option(
            "Probability above which a pixel is positive, for every class "
            "[default: the model's per-class thresholds]."
        ),
        click.option(
            "--mode",
            type=click.Choice(["regions", "parcels"]),
            default="regions",
            show_default=True,
            help="regions: a polygon per connected region of each class; parcels: a polygon "
            "per field, grown from markers inside the field extent by a watershed of the "
            "distance (without an extent band: the areas enclosed by the boundary class).",
        ),
        level_option(
            "--extent-threshold",
            "Parcels: extent probability above which a pixel is in a field "
            "[default: the model's delineation threshold].",
            min_open=True,
        ),
        level_option(
            "--marker-threshold",
            "Parcels: distance (0 on outlines, 1 at field centres) above which a field "
            "pixel seeds its parcel [default: the model's delineation threshold, else 0.5].",
            min_open=True,
        ),
        level_option(
            "--parcel-threshold",
            "Parcels from an extent: drop those whose mean extent probability is below "
            "this [default: the model's delineation threshold, else 0: keep all].",
        ),
        level_option(
            "--split",
            "Parcels from an extent and a boundary: a marker keeps only the pixels within "
            "this depth of the highest distance 8 px around, so that a gap in an edge does not "
            "join two fields' markers; 0: markers whole [default: the model's tuned level, "
            "else 0].",
        ),
        level_option(
            "--join",
            "Parcels from an extent and a boundary: neighbours whose mean boundary "
            "probability along their whole shared border is below this are one parcel; 0: "
            "never [default: the model's tuned level, else 0].",
        ),
        click.option(
            "--min-area",
            type=FiniteRange(min=0),
            default=0.0,
            show_default=True,
            help="Drop polygons smaller than this, in CRS units squared.",
        ),
        click.option(
            "--simplify",
            type=FiniteRange(min=0),
            default=0.0,
            show_default=True,
            help="Simplification tolerance in CRS units; neighbours stay gap-free.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f
