"""The API process's side of a worker: start it, call it, stream from it, stop it.

Two one-way pipes per worker: calls go down one as multiprocessing messages; results come
up the other as frames (frames.py). The event loop watches the results pipe (`add_reader`),
reads what it holds in one call and hands each message to the asyncio queue of the call it
belongs to, in the loop's own thread: no reader thread, so no thread switch or GIL hand-off
per streamed token. When the worker dies, every call in flight ends with `WorkerCrashed`
and `on_exit` reports why.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import multiprocessing
import pickle
import signal
import threading
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

import psutil
import structlog

from lampstand.plugins.contract import EngineStats, Operation
from lampstand.plugins.errors import (
    InvalidRequest,
    LampstandError,
    ModelUnavailable,
    RequestTimeout,
    WorkerCrashed,
)

from .child import worker_main
from .frames import FrameReader, read_frame_blocking
from .messages import LoadedInfo, WorkerSpec
from .process_memory import tree_rss

__all__ = ["WorkerHandle", "WorkerCall", "WorkerSpec", "LoadedInfo", "describe_exit"]

A = TypeVar("A")
R = TypeVar("R")
Message = tuple[str, int, Any]
FINAL_ANSWERS = frozenset({"end", "result", "error"})  # the last message the worker sends for a call
ENDINGS = FINAL_ANSWERS | {"gone"}  # a call is over; a "timeout" is ours, and the worker goes on
_SPAWN = multiprocessing.get_context("spawn")  # never fork a process that runs threads and a loop


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, in words."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class WorkerHandle:
    """A running worker process that has loaded its model."""

    def __init__(self, spec: WorkerSpec, process: BaseProcess, commands: Connection, results: Connection,
                 reader: FrameReader, info: LoadedInfo, on_exit: Callable[[str, list[str]], None],
                 on_stats: Callable[[EngineStats], None] | None = None) -> None:
        self.spec, self.process, self.info = spec, process, info
        self.commands, self.results = commands, results  # blocking sends; the loop watches results
        self._frames = reader
        self.on_exit, self.on_stats = on_exit, on_stats
        self.loop = asyncio.get_running_loop()
        self.alive = True
        self.stopping = False
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Queue[Message]] = {}
        self._requests: dict[int, str] = {}  # call id -> the request id it serves, for the exit log
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._settling: dict[int, asyncio.Future[None]] = {}  # cancelled calls the worker has not let go of yet
        self._send_lock = threading.Lock()
        self._exited = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self.loop.add_reader(results.fileno(), self._read)  # may make that descriptor non-blocking

    @classmethod
    async def start(cls, spec: WorkerSpec, on_exit: Callable[[str, list[str]], None], timeout: float,
                    on_stats: Callable[[EngineStats], None] | None = None) -> WorkerHandle:
        """Start a worker and wait until its model is loaded; `ModelUnavailable` if it is not.
        `on_stats` hears the engine statistics a batching plugin reports."""
        commands_in, commands = _SPAWN.Pipe(duplex=False)  # (receiving end, sending end)
        results, results_out = _SPAWN.Pipe(duplex=False)
        reader = FrameReader()
        process = _SPAWN.Process(target=worker_main, args=(commands_in, results_out, spec),
                                 name=f"lampstand-{spec.model_id}", daemon=True)
        await asyncio.to_thread(process.start)
        commands_in.close()
        results_out.close()

        def discard() -> None:
            commands.close()
            results.close()

        try:
            async with asyncio.timeout(timeout):
                message = await asyncio.to_thread(_first_message, results, reader)
        except BaseException:  # timed out or cancelled: the half-loaded worker must not linger
            process.kill()
            await asyncio.to_thread(process.join, 5)
            discard()
            raise
        if message is None or message[0] != "loaded":
            await asyncio.to_thread(process.join, 5)
            discard()
            if message is None:
                raise ModelUnavailable(f"model {spec.model_id!r}: worker {describe_exit(process.exitcode)} "
                                       "while loading")
            raise message[1]
        return cls(spec, process, commands, results, reader, message[1], on_exit, on_stats)

    @property
    def pid(self) -> int:
        return self.info.pid

    def rss_bytes(self) -> int:
        """Resident memory of the worker and the processes it started, now (0 once it is gone)."""
        try:
            process = psutil.Process(self.info.pid)
        except psutil.Error:
            return 0
        return tree_rss(process)

    def open(self, operation: Operation[A, R], argument: A, deadline: float | None = None) -> WorkerCall[R]:
        """Send a call of `operation` (from the plugin contract); its answers arrive through the `WorkerCall`."""
        return WorkerCall(self, *self._open(operation.method, argument, deadline))

    async def call(self, operation: Operation[A, R], argument: A, deadline: float | None = None) -> R:
        """The result of a plain operation (admin calls; requests call through their `Lease`)."""
        call = self.open(operation, argument, deadline)
        try:
            return await call.result()
        finally:
            call.close()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to unload and exit; kill it if it does not within `timeout`."""
        self.stopping = True
        if self.alive:
            try:
                self._send(("stop",))
            except OSError:
                pass
        await asyncio.to_thread(self.process.join, timeout)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join, 5)
        try:
            async with asyncio.timeout(5):
                await self._exited.wait()
        except TimeoutError:
            pass

    def abort(self, error: LampstandError) -> None:
        """End every call in flight with `error`, then kill the worker (shutdown after the grace time)."""
        for queue in list(self._pending.values()):
            queue.put_nowait(("error", -1, error))
        self._pending.clear()
        self.kill()

    def kill(self) -> None:
        """End the worker now, without waiting (shutdown abort)."""
        self.stopping = True
        if self.process.is_alive():
            self.process.kill()

    # -- plumbing --

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.commands.send(message)

    def _open(self, method: str, argument: Any, deadline: float | None) -> tuple[int, asyncio.Queue[Message]]:
        """Send the call; past `deadline` (loop time) a "timeout" message joins its queue.

        One timer per call rather than a timeout around every item: streamed tokens cost
        nothing extra for it.
        """
        if not self.alive:
            raise WorkerCrashed(f"the worker of model {self.spec.model_id!r} is not running")
        call_id = next(self._ids)
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._pending[call_id] = queue
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id is not None:
            self._requests[call_id] = str(request_id)
        try:
            self._send(("call", call_id, method, argument))
        except BaseException as exc:
            del self._pending[call_id]  # nothing was sent: no answer will ever come for it
            self._requests.pop(call_id, None)
            if isinstance(exc, OSError):
                raise WorkerCrashed(f"the worker of model {self.spec.model_id!r} is not running") from exc
            if isinstance(exc, (RecursionError, pickle.PicklingError)):
                raise InvalidRequest("the request is nested too deeply to hand to the model") from exc
            raise
        if deadline is not None:
            self._timers[call_id] = self.loop.call_at(deadline, queue.put_nowait, ("timeout", call_id, None))
        return call_id, queue

    def _close(self, call_id: int, cancel: bool) -> asyncio.Future[None]:
        """Stop listening to a call; cancel it in the worker when `cancel`. The future is done
        once the worker has let go of the call (its last answer arrived, or the worker is gone)."""
        settled: asyncio.Future[None] = self.loop.create_future()
        listening = self._pending.pop(call_id, None) is not None
        self._requests.pop(call_id, None)
        timer = self._timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()
        if cancel and listening and self.alive:
            try:
                self._send(("cancel", call_id))
                self._settling[call_id] = settled
                return settled
            except OSError:
                pass
        settled.set_result(None)
        return settled

    def _failure(self, kind: str, value: Any) -> LampstandError:
        if kind == "error" and isinstance(value, LampstandError):
            return value
        if kind == "timeout":
            return RequestTimeout("the request took longer than the server's request_timeout")
        if kind == "gone":
            return WorkerCrashed(f"the worker of model {self.spec.model_id!r} {value} during the request")
        return LampstandError(f"unexpected message {kind!r} from the worker")

    def _read(self) -> None:
        """Deliver every message waiting on the pipe; on end of file, report the exit."""
        try:
            for message in self._frames.read_available(self.results.fileno()):
                if message[0] == "stats":
                    if self.on_stats is not None and isinstance(message[2], EngineStats):
                        self.on_stats(message[2])
                    continue
                queue = self._pending.get(message[1])
                if queue is not None:
                    queue.put_nowait(message)
                elif message[0] in FINAL_ANSWERS:
                    _settle(self._settling.pop(message[1], None))
        except (EOFError, OSError):
            self.loop.remove_reader(self.results.fileno())
            # A fresh context: this callback runs in the one the loading request registered it in.
            self._reaper = self.loop.create_task(self._reap(), context=contextvars.Context())

    async def _reap(self) -> None:
        await asyncio.to_thread(self.process.join, 5)
        self._gone(describe_exit(self.process.exitcode))
        self._exited.set()

    def _gone(self, reason: str) -> None:
        self.alive = False
        in_flight = sorted(set(self._requests.values()))
        for queue in list(self._pending.values()):
            queue.put_nowait(("gone", -1, reason))
        self._pending.clear()
        self._requests.clear()
        for settled in self._settling.values():
            _settle(settled)
        self._settling.clear()
        self.results.close()
        self.commands.close()
        if not self.stopping:
            self.on_exit(reason, in_flight)


def _settle(settled: asyncio.Future[None] | None) -> None:
    if settled is not None and not settled.done():
        settled.set_result(None)


class WorkerCall(Generic[R]):
    """One call in flight on a worker: its answers (of type `R`), and how to stop listening."""

    def __init__(self, handle: WorkerHandle, call_id: int, answers: asyncio.Queue[Message]) -> None:
        self.handle, self.call_id, self.answers = handle, call_id, answers
        self.finished = False  # the worker has answered for the last time
        self._closed: asyncio.Future[None] | None = None

    async def items(self) -> AsyncIterator[R]:
        """The items of a streaming method, until its end; a failure raises."""
        while True:
            kind, value = await self._answer()
            if kind == "end":
                return
            if kind != "item":
                raise self.handle._failure(kind, value)
            yield value

    async def result(self) -> R:
        """The result of a plain method; a failure raises."""
        kind, value = await self._answer()
        if kind != "result":
            raise self.handle._failure(kind, value)
        return value

    def close(self) -> asyncio.Future[None]:
        """Stop listening (idempotent); an unfinished call is cancelled in the worker.

        The future is done once the worker has let go of the call: at once for a finished
        call, after the worker's last answer for a cancelled one.
        """
        if self._closed is None:
            while not self.finished and not self.answers.empty():  # answers that came but were not read
                self.finished = self.answers.get_nowait()[0] in ENDINGS
            self._closed = self.handle._close(self.call_id, cancel=not self.finished)
        return self._closed

    async def _answer(self) -> tuple[str, Any]:
        kind, _, value = await self.answers.get()
        self.finished = kind in ENDINGS
        return kind, value


def _first_message(conn: Connection, reader: FrameReader) -> Message | None:
    try:
        return read_frame_blocking(conn.fileno(), reader)
    except (EOFError, OSError):
        return None
