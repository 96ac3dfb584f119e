"""Outputs that appear complete or not at all: build under a temporary name, rename at the end."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import OutputExistsError


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output (a file, or a non-empty directory) unless ``overwrite``."""
    path = Path(path)
    occupied = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if occupied and not overwrite:
        raise OutputExistsError(f"{path} already exists and is not empty (use --overwrite)")
    return path


def check_not_inside(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> None:
    """Refuse an output folder that is, or holds, one of the inputs (overwrite would delete it)."""
    out = Path(out).resolve()
    for path in inputs:
        path = Path(path).resolve()
        if path == out or out in path.parents:
            raise OutputExistsError(f"{out} holds the input {path}: choose another output folder")


def check_not_an_input(out: str | os.PathLike, inputs: list, option: str = "--out") -> None:
    """Refuse an output file that is one of the inputs, whatever ``--overwrite`` says."""
    target = Path(out).resolve()
    for path in inputs:
        if path is not None and Path(path).resolve() == target:
            raise OutputExistsError(f"{option} {out} is one of the inputs: choose another file")


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a hidden sibling, then rename it to ``path``: complete or absent."""
    path = Path(path)
    staging = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        staging.write_text(text)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


@contextmanager
def staged_directory(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling directory to fill; it replaces ``path`` only if the block succeeds."""
    path = check_output(path, overwrite).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = path.parent / f".{path.name}.partial-{token}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_with(staging, path)


def replace_with(staging: Path, path: Path) -> None:
    """Move the finished ``staging`` directory to ``path``, removing what was there before."""
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    if path.exists() or path.is_symlink():
        os.rename(path, old)
    os.rename(staging, path)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists():
        old.unlink()
