"""Run a list of Dask tasks on the threaded scheduler or a ``dask.distributed`` cluster."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import dask
from dask.callbacks import Callback
from dask.delayed import Delayed

from geoseg.errors import ParameterError

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` each time a task finishes."""


class _CountFinished(Callback):
    def __init__(self, keys: set, progress: Progress):
        super().__init__()
        self._keys, self._progress, self._done = keys, progress, 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self._keys:
            self._done += 1
            self._progress(self._done, len(self._keys))


def compute(
    tasks: Sequence[Delayed],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> list[Any]:
    """Compute ``tasks`` and return their results in order.

    ``scheduler`` is the address of a ``dask.distributed`` scheduler (``tcp://host:port``);
    without it the local threaded scheduler runs with ``workers`` threads (default: all cores).
    """
    if workers is not None and scheduler is not None:
        raise ParameterError("give either --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {workers}")
    if scheduler is not None:
        return _compute_distributed(tasks, scheduler, progress)
    if progress is None:
        return list(dask.compute(*tasks, scheduler="threads", num_workers=workers))
    with _CountFinished({t.key for t in tasks}, progress):
        return list(dask.compute(*tasks, scheduler="threads", num_workers=workers))


def _compute_distributed(tasks: Sequence[Delayed], address: str, progress: Progress | None):
    from distributed import Client, as_completed

    if not re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", address):
        raise ParameterError(f"--scheduler {address!r}: expected an address like tcp://host:8786")
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ParameterError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    try:
        with client.as_current():
            futures = client.compute(list(tasks))
            for done, _ in enumerate(as_completed(futures), start=1):
                if progress:
                    progress(done, len(futures))
            return client.gather(futures)
    finally:
        client.close()
