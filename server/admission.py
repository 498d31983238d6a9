"""One hosted model's queue: who is admitted, who runs, and the turns they wait for.

Each configured model has one `Admission`, and nothing else changes its counts. A request
enters (or is refused at once with 429 when `max_concurrency + max_queue` are taken), waits
for one of `max_concurrency` turns (bounded by its deadline), ends its turn and leaves;
`Lease` (leases.py) does those steps for one request. Refusals are counted in the server's
metrics here. The model pool reads `idle` (evict or unload only an idle model) and takes
every turn at once to unload (`exclusive`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from lampstand.plugins.errors import QueueFull, RequestTimeout

from .metrics import Metrics

__all__ = ["Admission"]


class Admission:
    """The queue and the turns of one model."""

    def __init__(self, model_id: str, max_concurrency: int, max_queue: int, metrics: Metrics) -> None:
        self.model_id, self.max_concurrency, self.max_queue = model_id, max_concurrency, max_queue
        self.metrics = metrics
        self.admitted = 0  # entered and not yet left: waiting or running
        self.running = 0  # holding a turn
        self._turns = asyncio.Semaphore(max_concurrency)

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def idle(self) -> bool:
        """Nobody admitted: the model may be evicted or unloaded."""
        return self.admitted == 0

    def enter(self) -> None:
        """Take a place in the queue, or `QueueFull` (429) now."""
        if self.admitted >= self.max_concurrency + self.max_queue:
            self.refused("queue_full")
            raise QueueFull(f"model {self.model_id!r} is busy: {self.running} running and {self.waiting} waiting "
                            f"(max_queue {self.max_queue}); retry later", retry_after=1)
        self.admitted += 1

    def leave(self) -> None:
        """Give the place back."""
        self.admitted -= 1

    def refused(self, reason: str) -> None:
        """Count a request turned away before any work (`queue_full`, `shutting_down`)."""
        self.metrics.rejected.labels(self.model_id, reason).inc()

    async def take_turn(self, deadline: float) -> None:
        """Wait for a turn until `deadline` (loop time); `RequestTimeout` past it."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._turns.acquire()
        except TimeoutError:
            raise RequestTimeout(f"the request waited longer than request_timeout for model "
                                 f"{self.model_id!r}") from None
        self.running += 1

    def end_turn(self) -> None:
        """Give the turn to the next request."""
        self.running -= 1
        self._turns.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Count an admin call (an adapter load) as admitted, so the model is not evicted meanwhile."""
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Every turn at once: running requests finish first, waiting ones wait until the block ends."""
        taken = 0
        try:
            for _ in range(self.max_concurrency):
                await self._turns.acquire()
                taken += 1
            yield
        finally:
            for _ in range(taken):
                self._turns.release()
