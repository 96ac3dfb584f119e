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


def exit_in_a_child(value):
    """Kill the process running the task when it is a worker; return ``value`` in the main one."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        os._exit(1)
    return value


def test_a_pool_broken_before_any_result_falls_back_to_threads(caplog):
    tasks = [delayed(exit_in_a_child)(i) for i in range(3)]
    with caplog.at_level("WARNING", logger="geoseg.parallel"):
        assert compute_each(tasks, lambda x: x, workers=2, processes=True) == [0, 1, 2]
    assert "the process pool broke" in caplog.text


@pytest.mark.parametrize(
    "source, spec, unguarded",
    [
        ("import geoseg\ngeoseg.vectorize('a.tif', 'b.gpkg')\n", None, True),
        ("def main():\n    pass\n\nif __name__ == '__main__':\n    main()\n", None, False),
        ("if '__main__' == __name__:\n    pass\n", None, False),
        ("main()\n", "tools.run", True),  # python -m tools.run re-runs tools/run.py
        ("main()\n", "tools.__main__", False),  # python -m tools: never re-run
        (None, None, False),  # Jupyter, the interactive prompt, python -c: no file
    ],
)
def test_scripts_that_spawned_processes_would_re_run_unguarded(source, spec, unguarded, tmp_path):
    import importlib.machinery
    import types

    from geoseg.parallel import unguarded_main

    main = types.ModuleType("__main__")
    if source is not None:
        script = tmp_path / "script.py"
        script.write_text(source)
        main.__file__ = str(script)
        if spec is not None:
            main.__spec__ = importlib.machinery.ModuleSpec(spec, None, origin=str(script))
    assert unguarded_main(main) == (str(tmp_path / "script.py") if unguarded else None)


def touch(path):
    """A task that leaves a trace that it ran."""
    with open(path, "w"):
        return path


def test_processes_keep_few_results_waiting_for_a_slow_writer(tmp_path):
    started = []

    def slow_consume(path):
        if not started:
            time.sleep(1.5)  # the worker would run every task meanwhile if all were submitted
            started.append(len(list(tmp_path.iterdir())))
        return path

    tasks = [delayed(touch)(str(tmp_path / f"{i}.done")) for i in range(8)]
    assert len(compute_each(tasks, slow_consume, workers=1, processes=True)) == 8
    assert started[0] <= 2  # two tasks in flight per process
