"""Run a list of Dask tasks on threads, on local processes or on a ``dask.distributed`` cluster."""

from __future__ import annotations

import multiprocessing
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import nullcontext
from typing import Any

import dask
from dask.callbacks import Callback
from dask.delayed import Delayed, delayed

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


def _identity(result):
    return result


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
    return compute_each(tasks, _identity, workers=workers, scheduler=scheduler, progress=progress)


def compute_each(
    tasks: Sequence[Delayed],
    consume: Callable[[Any], Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
    processes: bool = False,
) -> list[Any]:
    """Compute ``tasks``, handing each result to ``consume`` as soon as it is ready.

    ``consume`` runs in this process, one call at a time (a single writer); each task's result
    is dropped once consumed, so memory holds only the tasks in flight. Returns what
    ``consume`` returned, in the order of ``tasks``. ``processes`` runs the tasks in ``workers``
    local processes instead of threads, for work that holds the GIL.
    """
    if workers is not None and scheduler is not None:
        raise ParameterError("give either --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {workers}")
    if scheduler is not None:
        return _compute_distributed(tasks, consume, scheduler, progress)
    if processes:
        return _compute_processes(tasks, consume, workers, progress)
    lock, failed = threading.Lock(), threading.Event()

    def consume_locked(result):
        with lock:
            if failed.is_set():  # dask does not wait for running tasks when one fails
                return None
            return consume(result)

    wrapped = [delayed(consume_locked, pure=False)(task) for task in tasks]
    counting = _CountFinished({t.key for t in wrapped}, progress) if progress else nullcontext()
    try:
        with counting:
            return list(dask.compute(*wrapped, scheduler="threads", num_workers=workers))
    except BaseException:
        with lock:  # waits for a write in progress; no other starts after this
            failed.set()
        raise


def _run_task(task: Delayed) -> Any:
    return dask.compute(task, scheduler="sync")[0]


def _compute_processes(tasks, consume, workers: int | None, progress: Progress | None) -> list:
    # "spawn": forking a process that runs GDAL or TensorFlow threads is unsafe
    context = multiprocessing.get_context("spawn")
    outputs: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            pending = {pool.submit(_run_task, task): i for i, task in enumerate(tasks)}
            done_count = 0
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    outputs[pending.pop(future)] = consume(future.result())
                    done_count += 1
                    if progress:
                        progress(done_count, len(tasks))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outputs


def _compute_distributed(tasks, consume, address: str, progress: Progress | None) -> list[Any]:
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
            index = {future.key: i for i, future in enumerate(futures)}
            finished = as_completed(futures, with_results=True)
            del futures  # a result is released once consumed
            outputs: list[Any] = [None] * len(index)
            for done, (future, result) in enumerate(finished, start=1):
                outputs[index[future.key]] = consume(result)
                del future, result
                if progress:
                    progress(done, len(index))
            return outputs
    finally:
        client.close()
