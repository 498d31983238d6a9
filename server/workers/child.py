"""The body of a worker process: load one plugin, then serve calls from the API process.

Messages are tuples, on two one-way pipes. From the parent, as multiprocessing sends them:
`("call", id, method, argument)`, `("cancel", id)` and `("stop",)`. To the parent, as
frames (frames.py): `("loaded", LoadedInfo)` or
`("load_failed", error)` once, then per call any number of `("item", id, value)` followed
by `("end", id)`, or one `("result", id, value)`, or one `("error", id, error)`. Every call
ends with exactly one of those three, cancelled ones included: the parent counts a cancelled
call as running until that answer arrives. A plugin that schedules its own calls also sends
`("stats", STATS_ID, EngineStats)` about once a second while it has something to tell.

The plugin's calls run one at a time, in arrival order, on one long-lived engine thread, the
thread that loaded it: OpenMP (torch) keeps a thread team per calling thread, and a fresh
thread per call cost 6% of embedding throughput on 2 cores (`bench/rag.py`'s index build).
The contract's concurrent operations (such as loading an adapter), and every call of a plugin
with more than one slot (which schedules them itself), run in threads of their own beside it;
an engine lock keeps unloading apart from the calls. A worker answers only the operations of
the capabilities its model declares (`operations_for` in the plugin contract).
A cancelled call stops after the item being produced (one decode step) and its generator
is closed, so the engine frees its work; a plain call stops at its plugin's next
`check_cancelled` (embedding and reranking check between slices). When the parent goes away the pipe closes and the
process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from multiprocessing.connection import Connection
from typing import Any, cast

import psutil
import structlog

from lampstand.plugins.cancellation import CallCancelled, call_scope
from lampstand.plugins.contract import AdapterHost, Footprint, Operation, Plugin, operations_for
from lampstand.plugins.errors import LampstandError

from ..logs import configure_logging
from .frames import write_frame
from .messages import LoadedInfo, WorkerSpec
from .process_memory import tree_rss

__all__ = ["worker_main", "STATS_ID"]

STATS_ID = -1  # the call id of engine statistics, which answer no call
STATS_INTERVAL = 1.0

log = logging.getLogger("lampstand.worker")


def transportable(exc: BaseException) -> LampstandError:
    """An error the API process accepts (frames.py), keeping its meaning.

    Ours go as they are; a plugin's own subclass of one of ours goes as the nearest class
    of ours, with its message, param, code and status; anything else is a 500.
    """
    if not isinstance(exc, LampstandError):
        return LampstandError(f"{type(exc).__name__}: {exc}")
    own = next(c for c in type(exc).__mro__ if c.__module__.startswith("lampstand."))
    if own is type(exc):
        return exc
    copy = own.__new__(own)
    copy.args, copy.__dict__ = exc.args, dict(exc.__dict__)
    copy.status_code, copy.error_type, copy.code = exc.status_code, exc.error_type, exc.code  # class-level there
    return copy


class _Server:
    """Serves calls on one loaded plugin until the parent says stop or goes away."""

    def __init__(self, commands: Connection, results: Connection, plugin: Plugin, engine: ThreadPoolExecutor) -> None:
        self.commands, self.results, self.plugin, self.engine = commands, results, plugin, engine
        self.operations: dict[str, Operation] = operations_for(plugin.capabilities())  # type: ignore[type-arg]
        self.side_by_side = plugin.slots() > 1  # the plugin schedules concurrent calls itself
        self.send_lock = threading.Lock()
        self.engine_lock = threading.Lock()
        self.stops: dict[int, threading.Event] = {}

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            write_frame(self.results.fileno(), message)

    def report_stats(self) -> None:
        """Forward the plugin's engine statistics about once a second, for the server's metrics."""
        while True:
            time.sleep(STATS_INTERVAL)
            try:
                stats = self.plugin.engine_stats()
            except Exception:  # statistics must never take the worker down
                log.exception("engine statistics failed")
                return
            if stats is not None:
                try:
                    self.send(("stats", STATS_ID, stats))
                except OSError:
                    return  # the API process is gone

    def serve(self) -> None:
        if self.side_by_side:
            threading.Thread(target=self.report_stats, name="lampstand-stats", daemon=True).start()
        while True:
            try:
                message = self.commands.recv()
            except (EOFError, OSError):
                return  # the API process is gone
            kind = message[0]
            if kind == "call":
                _, call_id, method, argument = message
                stop = self.stops[call_id] = threading.Event()
                if self.on_engine_thread(method):
                    self.engine.submit(self.run_call, call_id, method, argument, stop)
                else:
                    threading.Thread(target=self.run_call, args=(call_id, method, argument, stop),
                                     name=f"lampstand-call-{call_id}", daemon=True).start()
            elif kind == "cancel":
                event = self.stops.get(message[1])
                if event is not None:
                    event.set()
            elif kind == "stop":
                with self.engine_lock:
                    self.plugin.unload()
                return

    def on_engine_thread(self, method: str) -> bool:
        """Whether a call waits its turn on the engine thread (else it runs beside in its own)."""
        operation = self.operations.get(method)
        return operation is not None and not operation.concurrent and not self.side_by_side

    def run_call(self, call_id: int, method: str, argument: Any, stop: threading.Event) -> None:
        try:
            operation = self.operations.get(method)
            if operation is None:
                raise LampstandError(f"model {self.plugin.model_id!r} has no operation {method!r}")
            engine = nullcontext() if operation.concurrent or self.side_by_side else self.engine_lock
            with engine:
                if stop.is_set():
                    raise CallCancelled("cancelled before it started")
                with call_scope(stop):
                    result = getattr(self.plugin, method)(argument)
                if isinstance(result, Iterator):
                    self.stream(call_id, result, stop)
                else:
                    self.send(("result", call_id, result))
        except CallCancelled as exc:  # the parent has stopped listening; the log says how far it got
            log.info("call %s %s", method, exc.message)
            self.send(("error", call_id, exc))
        except BaseException as exc:  # every failure goes back to the request that caused it
            if not isinstance(exc, LampstandError):
                log.error("call %s failed:\n%s", method, traceback.format_exc())
            self.send(("error", call_id, transportable(exc)))
        finally:
            self.stops.pop(call_id, None)

    def stream(self, call_id: int, items: Iterator[Any], stop: threading.Event) -> None:
        try:
            for item in items:
                self.send(("item", call_id, item))
                if stop.is_set():
                    break
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self.send(("end", call_id, None))


def _measured(plugin: Plugin, rss_before: int) -> Footprint:
    """RAM: what loading added to the RSS of this process and its children (engine libraries
    included); VRAM: the plugin's word."""
    reported = plugin.measured_footprint()
    added = max(tree_rss(psutil.Process()) - rss_before, 0)
    return Footprint(ram_bytes=added, vram_bytes=reported.vram_bytes if reported else 0)


def _load_adapters(plugin: Plugin, spec: WorkerSpec) -> None:
    """Reload the adapters the server had loaded into this model (a restart loses them)."""
    for adapter in spec.adapters:
        try:
            cast(AdapterHost, plugin).load_adapter(adapter)
        except Exception as exc:  # the model still serves; requests naming the adapter get a 404
            log.error("adapter %s could not be reloaded: %s", adapter.name, exc)


def worker_main(commands: Connection, results: Connection, spec: WorkerSpec) -> None:
    """Entry point of the worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure_logging(spec.log_level, spec.log_format)
    structlog.contextvars.bind_contextvars(worker=spec.model_id)
    rss_before = tree_rss(psutil.Process())
    engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lampstand-engine")
    try:
        plugin = spec.plugin_cls(spec.model_id, spec.path, spec.options)
        engine.submit(plugin.load).result()
        _load_adapters(plugin, spec)
        info = LoadedInfo(pid=os.getpid(), context_length=plugin.context_length(),
                          measured=_measured(plugin, rss_before))
    except BaseException as exc:  # reported to the parent, which marks the model failed
        write_frame(results.fileno(), ("load_failed", transportable(exc)))
        results.close()
        os._exit(0)
    write_frame(results.fileno(), ("loaded", info))
    _Server(commands, results, plugin, engine).serve()
    results.close()
    os._exit(0)  # do not wait for call threads of a parent that is gone
