"""Cancelling a plugin call between units of work.

The worker runs each call in its own thread with a stop event, set when the request's client
goes away or its deadline passes. Streaming methods stop after the item they are producing;
plain methods that work through many inputs (embedding, reranking) call `check_cancelled`
between slices, which raises `CallCancelled` once the event is set, so the engine is free
again within one slice instead of after the whole request. Outside a worker call the check
does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import LampstandError

__all__ = ["CallCancelled", "call_scope", "check_cancelled"]

_current = threading.local()


class CallCancelled(LampstandError):
    """The call's request was abandoned; nobody waits for this error."""

    status_code = 499
    error_type = "cancelled"
    code = "cancelled"


@contextmanager
def call_scope(stop: threading.Event) -> Iterator[None]:
    """Make `stop` the event `check_cancelled` reads in this thread."""
    previous = getattr(_current, "stop", None)
    _current.stop = stop
    try:
        yield
    finally:
        _current.stop = previous


def check_cancelled(done: int = 0, total: int = 0) -> None:
    """Raise `CallCancelled` if this thread's call has been cancelled (`done` of `total` say how far it got)."""
    stop = getattr(_current, "stop", None)
    if stop is not None and stop.is_set():
        raise CallCancelled(f"cancelled after {done} of {total}")
