"""vLLM's async engine on an event loop of its own, driven from the worker's call threads.

The worker runs each call in a thread and expects plain iterators; vLLM's `AsyncLLM` lives on
an asyncio loop. `EngineLoop` owns that loop in one daemon thread: `run` waits for a
coroutine, `stream` turns an async generator into a blocking iterator whose closing cancels
the generator's task (vLLM then aborts the request and frees its KV blocks). This module
never imports vLLM.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["EngineLoop"]

T = TypeVar("T")
_END = object()


class EngineLoop:
    """One asyncio loop in one thread, for one engine."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lampstand-vllm-loop", daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine `make()` on the loop and wait for its result."""

        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def stream(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """The items of the async generator `make()`, as they come; closing early cancels it."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for item in make():
                    items.put(item)
            except asyncio.CancelledError:
                raise  # the reader has gone; nobody waits for the queue
            except BaseException as exc:  # the reader raises it in its own thread
                items.put(_Failed(exc))
            items.put(_END)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        return _Stream(items, future)

    def close(self) -> None:
        """Stop the loop once the tasks it is running have been cancelled."""
        if not self._loop.is_running():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Stream(Iterator[Any]):
    """Reads the pump's queue; `close` cancels the pump even before the first item."""

    def __init__(self, items: queue.SimpleQueue[Any], future: Any) -> None:
        self._items, self._future, self._done = items, future, False

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._items.get()
        if item is _END or isinstance(item, _Failed):
            self.close()
            if item is _END:
                raise StopIteration
            raise item.exc
        return item

    def close(self) -> None:
        self._done = True
        self._future.cancel()  # thread-safe; a finished pump ignores it
