"""Bridges a blocking plugin generator, run in its own thread, to an async iterator.

Items cross with `call_soon_threadsafe` (microseconds per item, no polling). Closing the
async iterator (client gone, error, cancellation) asks the thread to stop; it stops after
the current item, closes the plugin's generator so the engine frees its work, and then
releases the engine lock, so the next request never runs beside a stale one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

__all__ = ["iterate_in_thread"]

T = TypeVar("T")
_ITEM, _ERROR, _END = 0, 1, 2


async def iterate_in_thread(produce: Callable[[], Iterator[T]], engine_lock: threading.Lock) -> AsyncIterator[T]:
    """Yield what `produce()` yields, computed in a worker thread holding `engine_lock`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    stop = threading.Event()

    def send(kind: int, value: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed during shutdown; nobody is listening
            stop.set()

    def work() -> None:
        with engine_lock:
            try:
                items = produce()
                try:
                    for item in items:
                        send(_ITEM, item)
                        if stop.is_set():
                            break
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
            except BaseException as exc:  # delivered to the awaiting side, raised there
                send(_ERROR, exc)
                return
        send(_END, None)

    thread = threading.Thread(target=work, name="lampstand-generate", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _ERROR:
                raise value  # type: ignore[misc]
            else:
                return
    finally:
        stop.set()
