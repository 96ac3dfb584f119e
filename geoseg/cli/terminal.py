"""The terminal: one console on stderr for progress bars and log lines."""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager

from geoseg.cli.options import FlagsFormatter


@functools.cache
def stderr_console():
    """The one rich console on stderr that progress bars and log lines share."""
    from rich.console import Console

    return Console(stderr=True)


def setup_logging(verbose: int) -> None:
    """``-v``: geoseg's steps (INFO) and TensorFlow's start-up lines; ``-vv``: DEBUG too."""
    from rich.logging import RichHandler

    handler = RichHandler(console=stderr_console(), show_path=False, show_time=verbose > 1)
    handler.setFormatter(FlagsFormatter("%(message)s"))
    library = logging.getLogger("geoseg")
    library.handlers[:] = [handler]
    # without -v the level is inherited (WARNING unless the caller set the root logger's)
    library.setLevel({0: logging.NOTSET, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if not verbose:  # TensorFlow's C++ notes (oneDNN, CUDA probing) are noise on a terminal;
        # its real errors reach the user as Python exceptions
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def progress_bar(description: str):
    """A rich progress bar on a terminal (silent otherwise); yields a ``progress(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, console=console, disable=not console.is_terminal, transient=True
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
