"""The rules every output follows, in one place (``docs/reliability.md``).

- An output is never an input: it never resolves to an input file, a file inside an input
  folder or another output of the run, and an output folder never holds an input
  (:func:`check_apart`).
- One writer per output: a run holds a lock on each output while it writes
  (:func:`output_lock`); a lock left by a dead process is free.
- Complete or absent: outputs are built under a hidden name, verified, then renamed
  (:func:`staged_directory`, :func:`publish`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import OutputExistsError, OutputLockedError, OutputWriteError, first_line


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output (a file, or a non-empty directory) unless ``overwrite``."""
    path = Path(path)
    occupied = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if occupied and not overwrite:
        raise OutputExistsError(f"{path} already exists and is not empty (use `overwrite`)")
    return path


def check_apart(outputs: Iterable, inputs: Iterable) -> None:
    """Refuse any output that resolves to an input file, lies inside an input folder, holds an
    input, or is (or holds) another output; ``--overwrite`` does not change this. ``None``
    entries and GDAL paths (URLs, ``/vsi...``) are skipped."""
    from geoseg.io.remote import is_gdal_path

    def local(paths):
        return [Path(p).resolve() for p in paths if p is not None and not is_gdal_path(str(p))]

    outputs, inputs = local(outputs), local(inputs)
    for out in outputs:
        for source in inputs:
            if out == source:
                raise OutputExistsError(f"the output {out} is an input: choose another file")
            if source in out.parents and source.is_dir():
                raise OutputExistsError(
                    f"the output {out} is inside the input folder {source}: choose another place"
                )
            if out in source.parents:
                raise OutputExistsError(f"the output {out} holds the input {source}")
    for i, out in enumerate(outputs):
        for other in outputs[i + 1 :]:
            if out == other or out in other.parents or other in out.parents:
                raise OutputExistsError(f"two outputs of one run overlap: {out} and {other}")


def lock_path(path: str | os.PathLike) -> Path:
    """The hidden lock file of an output."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lock"


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the output ``path`` while the block runs; refuse at once when
    another live process holds it. The lock is an ``flock`` on a hidden sibling file, which the
    system releases when its process dies, so a crashed run never blocks the next one."""
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise OutputLockedError(
                f"another geoseg run ({holder}) is writing {Path(path).absolute()}; wait for it "
                "or choose another output"
            ) from None
        try:  # the file may have been removed by the holder that released it meanwhile
            same = os.fstat(descriptor).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        target.unlink(missing_ok=True)
        os.close(descriptor)


def write_failure(path: str | os.PathLike, exc: BaseException) -> OutputWriteError:
    """The one-line error of an output that could not be written, naming a full disk."""
    folder = Path(path).absolute().parent
    try:
        full = shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        full = False
    full = (
        full
        or getattr(exc, "errno", None) == errno.ENOSPC
        or any(words in str(exc) for words in ("No space", "disk is full"))
    )
    why = "no space left on the device" if full else first_line(exc)
    return OutputWriteError(f"could not write {path}: {why}; nothing was written under that name")


def publish(draft: Path, path: Path, verify: Callable[[Path], None]) -> None:
    """Rename the finished ``draft`` to ``path`` once ``verify(draft)`` passes (it raises on a
    damaged file); a draft that fails is removed and nothing appears under ``path``."""
    try:
        verify(draft)
        os.replace(draft, path)
    except Exception as exc:
        draft.unlink(missing_ok=True)
        raise write_failure(path, exc) from None


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
    with output_lock(path):
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
    if old.is_symlink() or old.is_file():  # a link is removed, never what it points to
        old.unlink()
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)


def hidden_sibling(path: Path, suffix: str) -> Path:
    """A hidden, unique path next to ``path`` for work in progress."""
    return path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}{suffix}"
