"""compute_each: one writer at a time, and no write still running after a failure."""

from __future__ import annotations

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
