"""A request's claim on a model: its place in the queue, then its turn, then the release.

`ModelPool.admit` makes a `Lease` or refuses at once (429 when the queue is full), before
the request is tokenised or its media decoded. `lease.call` and `lease.stream` wait for a
turn (bounded by the request's deadline), load the model if needed and run one plugin method
on its worker. Leaving the `async with` block gives the turn to the next request and restarts
the model's keep-alive clock, but only once the worker has let go of the request's work: a
call its client abandoned (or that ran past the deadline) is cancelled in the worker and
still counts as running until the worker says it has stopped, so the queue never sends the
next request to a worker that is still busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from lampstand.plugins.contract import Operation
from lampstand.plugins.errors import InvalidRequest

from .memory import parse_duration

if TYPE_CHECKING:
    from .model_pool import HostedModel, ModelPool
    from .workers import WorkerCall, WorkerHandle

__all__ = ["Lease", "keep_alive_of", "DEFAULT"]

A = TypeVar("A")
R = TypeVar("R")

DEFAULT = "default"  # keep_alive not given: the model's own setting applies


def keep_alive_of(value: str | float | None) -> float | None | str:
    """A request's `keep_alive` (Ollama's field: "5m", seconds, 0, -1) in seconds; 400 when unreadable."""
    if value is None:
        return DEFAULT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(f"keep_alive: {exc}", param="keep_alive") from None


class Lease:
    """One request's hold on one model."""

    def __init__(self, pool: ModelPool, hosted: HostedModel, keep_alive: float | None | str = DEFAULT) -> None:
        hosted.admission.enter()  # 429 here, before anything else
        self.pool, self.hosted, self.keep_alive = pool, hosted, keep_alive
        self.metrics = hosted.admission.metrics
        loop = asyncio.get_running_loop()
        self.arrived = loop.time()
        self.deadline = self.arrived + (hosted.config.request_timeout or pool.server.request_timeout)
        self.holding = False
        self.released = False
        self.given_back = False
        self._calls: set[WorkerCall[Any]] = set()
        self._held: set[asyncio.Future[Any]] = set()
        self._turn = asyncio.Lock()  # the choices of one request share its turn

    @property
    def model_id(self) -> str:
        return self.hosted.id

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Give the turn back; a request that ended without an error counts in the e2e latency."""
        if exc is None:
            self.metrics.e2e.labels(self.model_id).observe(asyncio.get_running_loop().time() - self.arrived)
        self.release()

    async def _worker(self) -> WorkerHandle:
        """Wait for this request's turn on the model (one, however many of its calls ask), then its loaded worker."""
        async with self._turn:
            if not self.holding:
                await self.hosted.admission.take_turn(self.deadline)
                self.holding = True
        return await self.pool.ensure_loaded(self.hosted)

    async def call(self, operation: Operation[A, R], argument: A) -> R:
        """On this request's turn, the result of `operation` on the model's worker."""
        call = await self._open(operation, argument)
        try:
            return await call.result()
        finally:
            self._close(call)

    async def stream(self, operation: Operation[A, R], argument: A) -> AsyncIterator[R]:
        """On this request's turn, the items the streaming `operation` yields."""
        call = await self._open(operation, argument)
        try:
            async for item in call.items():
                yield item
        finally:
            self._close(call)

    def hold(self, work: asyncio.Future[Any]) -> None:
        """Keep this request's turn until `work` is done, even past `release`."""
        if not work.done():
            self._held.add(work)
            work.add_done_callback(self._work_done)

    def release(self) -> None:
        """Give the turn back (idempotent) and restart the keep-alive clock, once held work is done.

        A call still open here (its stream was left unfinished) is cancelled in the worker first.
        """
        if self.released:
            return
        self.released = True
        for call in list(self._calls):
            self._close(call)
        if not self._held:
            self._give_back()

    async def _open(self, operation: Operation[A, R], argument: A) -> WorkerCall[R]:
        worker = await self._worker()
        call = worker.open(operation, argument, self.deadline)
        self._calls.add(call)
        return call

    def _close(self, call: WorkerCall[Any]) -> None:
        self._calls.discard(call)
        self.hold(call.close())

    def _work_done(self, work: asyncio.Future[Any]) -> None:
        self._held.discard(work)
        if self.released and not self._held:
            self._give_back()

    def _give_back(self) -> None:
        if self.given_back:
            return
        self.given_back = True
        if self.holding:
            self.hosted.admission.end_turn()
        self.hosted.admission.leave()
        self.pool.touch(self.hosted, self.keep_alive)
