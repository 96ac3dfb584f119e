r"""Errors raised by geoseg for bad input.

Each inherits from a builtin so callers can catch it the usual way (like rasterio's errors);
the CLI turns any :class:`GeosegError` into a one-line message and a non-zero exit.

Messages (and log lines) name the parameters of geoseg's functions in backticks, as
``\`split_by\` must be one of ...``: a notebook user reads the argument they passed, and the
CLI writes each as the option that sets it (``--split-by``).
"""

import re

PARAMETER_NAME = re.compile(r"`([a-z][a-z0-9_]*)`")
"""A parameter named in a message."""


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class InputFileError(GeosegError, FileNotFoundError):
    """An input path does not exist or cannot be opened."""


class RasterError(GeosegError, ValueError):
    """A raster cannot be used: no CRS, no transform, mismatched bands."""


class LabelsError(GeosegError, ValueError):
    """Labels cannot be used: unknown class field, no overlap, no geometries."""


class ParameterError(GeosegError, ValueError):
    """An option value is out of range or inconsistent with another."""

    @property
    def parameters(self) -> list[str]:
        """The parameters at fault, as the message names them."""
        return PARAMETER_NAME.findall(str(self))


class OutputExistsError(GeosegError, FileExistsError):
    """The output exists and ``overwrite`` was not asked for."""


class TrainingError(GeosegError, RuntimeError):
    """Training could not produce a model, e.g. the loss diverged."""


class NotAPredictionError(GeosegError, ValueError):
    """A raster or polygon file was not written by ``geoseg predict`` or ``geoseg vectorize``."""


class ResourceError(GeosegError, MemoryError):
    """The run needs more memory than the machine has, e.g. for very large chips."""


class OutputWriteError(GeosegError, OSError):
    """An output could not be written completely (a full disk, a failing writer); nothing was
    published under its name."""


class OutputLockedError(GeosegError, BlockingIOError):
    """Another run is writing the same output."""


class CatalogError(GeosegError, LookupError):
    """A STAC catalogue holds nothing usable for a search: no item in a window, a missing
    asset."""


class CatalogUnreachableError(GeosegError, ConnectionError):
    """A STAC API cannot be reached or answers with an error."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by the user (Ctrl-C). The message says what the run kept; ``resumable``
    whether ``resume`` continues it."""

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable
