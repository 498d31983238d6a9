"""Runs blocking work in a thread and hands what it emits to the caller as an iterator.

The thread is the caller's long-lived one (a one-thread executor): CUDA libraries keep their
handles and workspaces per thread, and a fresh thread per request paid about 0.5 s of
set-up on every image (measured on an H100 with an SD-1.5-sized pipeline).

The work gets two functions: `emit(item)` queues an item for the caller, `stopped()` says
whether the caller has closed the iterator. A pipeline's step callback calls `stopped()` and
raises `Stopped` when it is true, so closing the iterator ends the work at the next step; the
close then waits for the thread, so nothing touches the pipeline after it returns. An error
in the work is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["Stopped", "iterate_in_thread"]

Emit = Callable[[Any], None]
Work = Callable[[Emit, Callable[[], bool]], None]


class Stopped(Exception):
    """Raised inside the work once its caller has stopped listening."""


class _Done:
    """Queued last: the work returned."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def iterate_in_thread(work: Work, executor: ThreadPoolExecutor) -> Iterator[Any]:
    """The items `work` emits, as it emits them; `work` runs on `executor`'s thread."""
    items: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            work(items.put, stop.is_set)
        except Stopped:
            pass
        except BaseException as exc:  # handed to the caller, which raises it
            items.put(_Failed(exc))
        finally:
            items.put(_Done())

    finished = executor.submit(run)
    try:
        while True:
            item = items.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        finished.result()
