"""compute_each: one writer at a time, and no write still running after a failure."""

from __future__ import annotations

import operator
import os
import threading
import time

import pytest
from dask import delayed

from geoseg.parallel import compute_each


def test_results_are_consumed_one_at_a_time_in_task_order():
    active, seen = [], []

    def consume(x):
        active.append(x)
        assert len(active) == 1  # never two writers at once
        time.sleep(0.01)
        active.remove(x)
        seen.append(x)
        return x * 10

    assert compute_each([delayed(lambda v: v)(i) for i in range(6)], consume, workers=2) == [
        0, 10, 20, 30, 40, 50
    ]  # fmt: skip
    assert sorted(seen) == list(range(6))


def test_a_failure_waits_for_the_write_in_progress():
    writing = threading.Event()
    finished = []

    def consume(x):
        writing.set()
        time.sleep(0.5)  # a slow write, still running when the other task fails
        finished.append(x)

    def fail():
        writing.wait(5)
        raise RuntimeError("block failed")

    with pytest.raises(RuntimeError, match="block failed"):
        compute_each([delayed(lambda: 1)(), delayed(fail)()], consume, workers=2)
    assert finished == [1]  # the write ended before compute_each raised


def test_processes_run_tasks_elsewhere_and_consume_here_in_task_order():
    here = os.getpid()
    consumed_in = []

    def consume(pid):
        consumed_in.append(os.getpid())
        return pid

    tasks = [delayed(os.getpid)() for _ in range(3)]
    pids = compute_each(tasks, consume, workers=2, processes=True)
    assert len(pids) == 3 and here not in pids and set(consumed_in) == {here}
    ordered = [delayed(operator.mul)(i, 10) for i in range(5)]
    assert compute_each(ordered, lambda x: x, processes=True) == [0, 10, 20, 30, 40]


def test_a_failed_process_task_raises_its_error():
    with pytest.raises(ZeroDivisionError):
        compute_each([delayed(operator.truediv)(1, 0)], lambda x: x, workers=1, processes=True)
