"""Run a list of Dask tasks on threads, on local processes or on a ``dask.distributed`` cluster."""

from __future__ import annotations

import ast
import logging
import multiprocessing
import multiprocessing.process
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from itertools import islice
from typing import Any

import dask
import dask.threaded
from dask.callbacks import Callback
from dask.delayed import Delayed, delayed

from geoseg.errors import ParameterError

logger = logging.getLogger(__name__)

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
        raise ParameterError("give either `workers` or `scheduler`, not both")
    if workers is not None and workers < 1:
        raise ParameterError(f"`workers` must be at least 1, got {workers}")
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
            # a scheduler function: the name "threads" makes dask import distributed (0.3 s)
            return list(dask.compute(*wrapped, scheduler=dask.threaded.get, num_workers=workers))
    except BaseException:
        with lock:  # waits for a write in progress; no other starts after this
            failed.set()
        raise


def _run_task(task: Delayed) -> Any:
    return dask.compute(task, scheduler="sync")[0]


def _compute_processes(tasks, consume, workers: int | None, progress: Progress | None) -> list:
    """Spawned processes, or threads where spawning cannot work (see :func:`unguarded_main`)."""
    script = unguarded_main()
    if script is not None:
        logger.info(
            'threads instead of processes: %s has no `if __name__ == "__main__":` guard, '
            "which spawned processes need (they re-run the script)",
            script,
        )
        return compute_each(tasks, consume, workers=workers, progress=progress)
    try:
        return _compute_spawned(tasks, consume, workers, progress)
    except _BrokenBeforeResults as exc:
        logger.warning("threads instead of processes: the process pool broke (%s)", exc)
        return compute_each(tasks, consume, workers=workers, progress=progress)


class _BrokenBeforeResults(Exception):
    """The process pool broke before any result was consumed: nothing is lost by a re-run."""


_IN_FLIGHT_PER_PROCESS = 2
"""Tasks handed to the pool at once, per process: enough to keep each busy while the single
writer catches up, few enough that results waiting for it do not pile up in memory."""


def _compute_spawned(tasks, consume, workers: int | None, progress: Progress | None) -> list:
    # "spawn": forking a process that runs GDAL or TensorFlow threads is unsafe
    context = multiprocessing.get_context("spawn")
    workers = workers or os.cpu_count() or 1
    logger.info("%d tasks in %d spawned processes", len(tasks), workers)
    outputs: list[Any] = [None] * len(tasks)
    waiting = iter(enumerate(tasks))
    done_count = 0
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        try:
            pending = {}

            def submit(count: int) -> None:
                for i, task in islice(waiting, count):
                    pending[pool.submit(_run_task, task)] = i

            submit(_IN_FLIGHT_PER_PROCESS * workers)
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    outputs[pending.pop(future)] = consume(future.result())
                    done_count += 1
                    if progress:
                        progress(done_count, len(tasks))
                submit(len(done))
        except BrokenProcessPool as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            if done_count:
                raise
            raise _BrokenBeforeResults(exc) from exc
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outputs


def unguarded_main(main=None) -> str | None:
    """The script that spawned processes would re-run although it has no ``__main__`` guard.

    Mirrors :func:`multiprocessing.spawn.get_preparation_data`: a child re-runs the main module
    by name unless it is a package's ``__main__`` (``python -m geoseg``), else by path; there is
    nothing to re-run from Jupyter, the interactive prompt or ``python -c``. ``main`` defaults
    to ``sys.modules["__main__"]``. Returns the script's path, or None where spawning is safe.
    """
    main = sys.modules["__main__"] if main is None else main
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return None
        path = main.__spec__.origin
    else:
        path = getattr(main, "__file__", None)
        if path and os.path.splitext(os.path.basename(path))[0] == "ipython":
            return None
        if path and not os.path.isabs(path) and multiprocessing.process.ORIGINAL_DIR:
            path = os.path.join(multiprocessing.process.ORIGINAL_DIR, path)
    if not path or not os.path.isfile(path) or _has_main_guard(path):
        return None
    return path


def _has_main_guard(path: str) -> bool:
    """Whether the Python file at ``path`` has a top-level ``if __name__ == "__main__":``."""
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: try processes, threads follow if the pool breaks
    guards = {'__name__ == "__main__"', '"__main__" == __name__'}
    tests = (
        ast.unparse(node.test).replace("'", '"') for node in tree.body if isinstance(node, ast.If)
    )
    return any(test in guards for test in tests)


IN_FLIGHT_PER_THREAD = 2
"""Tasks submitted to a cluster at once, per worker thread: enough to keep every worker busy
while the single writer catches up, few enough that finished results do not pile up."""


def _check_address(address: str) -> None:
    if not re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", address):
        raise ParameterError(f"`scheduler` {address!r}: expected an address like tcp://host:8786")


def _connect(address: str):
    from distributed import Client

    _check_address(address)
    try:
        return Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ParameterError(f"cannot reach the Dask scheduler at {address} ({exc})") from None


def check_scheduler(address: str | None) -> None:
    """Refuse an unreachable ``--scheduler`` now, before expensive set-up (model loading)."""
    if address is not None:
        _connect(address).close()


def _compute_distributed(tasks, consume, address: str, progress: Progress | None) -> list[Any]:
    """Keep a bounded number of tasks in flight; tasks lost with a worker are run again by Dask."""
    from distributed import as_completed

    client = _connect(address)
    try:
        with client.as_current():
            threads = sum(client.nthreads().values()) or 1
            limit = max(2, IN_FLIGHT_PER_THREAD * threads)
            queue = iter(enumerate(tasks))
            index: dict[str, int] = {}

            def submit_next(finished) -> None:
                for i, task in queue:
                    (future,) = client.compute([task])
                    index[future.key] = i
                    finished.add(future)
                    return

            finished = as_completed([], with_results=True)
            for _ in range(min(limit, len(tasks))):
                submit_next(finished)
            outputs: list[Any] = [None] * len(tasks)
            for done, (future, result) in enumerate(finished, start=1):
                outputs[index.pop(future.key)] = consume(result)
                del future, result  # a result is released once consumed
                submit_next(finished)
                if progress:
                    progress(done, len(tasks))
            return outputs
    finally:
        client.close()
