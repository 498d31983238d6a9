"""A request's claim on a model: its place in the queue, then its turn, then the release.

`ModelPool.admit` makes a `Lease` or refuses at once (429 when the queue is full), before
the request is tokenised or its media decoded. `await lease.worker()` waits for a turn
(bounded by the request's deadline) and loads the model if needed. Leaving the `async with`
block gives the turn to the next request and restarts the model's keep-alive clock.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from lampstand.plugins.errors import InvalidRequest, QueueFull, RequestTimeout

from .memory import parse_duration

if TYPE_CHECKING:
    from .model_pool import HostedModel, ModelPool
    from .workers import WorkerHandle

__all__ = ["Lease", "keep_alive_of", "DEFAULT"]

DEFAULT = "default"  # keep_alive not given: the model's own setting applies


def keep_alive_of(value: str | float | None) -> float | None | str:
    """A request's `keep_alive` (Ollama's field: "5m", seconds, 0, -1) in seconds; 400 when unreadable."""
    if value is None:
        return DEFAULT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="keep_alive") from None


class Lease:
    """One request's hold on one model."""

    def __init__(self, pool: ModelPool, hosted: HostedModel, keep_alive: float | None | str = DEFAULT) -> None:
        running, waiting = hosted.running, hosted.admitted - hosted.running
        if hosted.admitted >= hosted.config.max_concurrency + hosted.max_queue:
            pool.metrics.rejected.labels(hosted.id, "queue_full").inc()
            raise QueueFull(f"model {hosted.id!r} is busy: {running} running and {waiting} waiting "
                            f"(max_queue {hosted.max_queue}); retry later", retry_after=1)
        self.pool, self.hosted, self.keep_alive = pool, hosted, keep_alive
        timeout = hosted.config.request_timeout or pool.server.request_timeout
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.holding = False
        self.released = False
        hosted.admitted += 1

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()

    async def worker(self) -> WorkerHandle:
        """Wait for this request's turn on the model, then its loaded worker."""
        if not self.holding:
            try:
                async with asyncio.timeout_at(self.deadline):
                    await self.hosted.slot.acquire()
            except TimeoutError:
                raise RequestTimeout(f"the request waited longer than request_timeout for model "
                                     f"{self.hosted.id!r}") from None
            self.holding = True
            self.hosted.running += 1
        return await self.pool.ensure_loaded(self.hosted)

    def release(self) -> None:
        """Give the turn back (idempotent) and restart the keep-alive clock."""
        if self.released:
            return
        self.released = True
        if self.holding:
            self.hosted.running -= 1
            self.hosted.slot.release()
        self.hosted.admitted -= 1
        self.pool.touch(self.hosted, self.keep_alive)
