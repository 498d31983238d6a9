"""The processes vLLM starts beside the model's worker: allowed to start, and never outliving it.

lampstand's workers are daemonic multiprocessing children, which multiprocessing forbids to
have children of their own; vLLM spawns its engine core (and that its executor workers) with
multiprocessing. `allow_children` lifts the flag in this worker process while the engine starts.

A worker killed outright (SIGKILL, the OOM killer) runs no cleanup, and vLLM's engine core does
not watch its parent, so it would live on holding the model's memory. `Reaper` is a small
watchdog process holding the read end of a pipe only this worker writes to: when the worker
dies the pipe reaches end of file and the watchdog kills the processes vLLM started; after a
clean unload it is told so and exits without killing anything.

When the engine core fails to start, vLLM raises "Engine core initialization failed. See root
cause above": the cause is only in the engine process's log. `engine_errors` adds a handler
for vLLM's error records to a file, for the processes started while it is open, so the load's
424 can name the cause. vLLM is imported only there.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

__all__ = ["allow_children", "engine_errors", "EngineErrors", "Reaper"]

_WATCH = """
import signal, sys
import psutil
if sys.stdin.read() == "done":
    sys.exit(0)
for pid, started in (arg.split(":") for arg in sys.argv[1:]):
    try:
        child = psutil.Process(int(pid))
        if child.create_time() == float(started):  # not a new process that took a freed pid
            child.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass
"""


@contextmanager
def allow_children() -> Iterator[None]:
    """Let this (daemonic) process start multiprocessing children while the block runs."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemon = config.get("daemon")
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = daemon


class EngineErrors:
    """The error records vLLM's processes logged while starting."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def last(self) -> str:
        """The last line of the last error (a traceback's exception line), or ""."""
        try:
            lines = [line.strip() for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines()]
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line), "")


@contextmanager
def engine_errors() -> Iterator[EngineErrors]:
    """vLLM's logging as it is, plus its errors copied to a file, in processes started in the block."""
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    with tempfile.TemporaryDirectory(prefix="lampstand-vllm-") as tmp:
        errors = Path(tmp) / "errors.log"
        config = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
        config["handlers"]["startup_errors"] = {"class": "logging.FileHandler", "filename": str(errors),
                                                "level": "ERROR", "formatter": "vllm"}
        config["loggers"]["vllm"]["handlers"].append("startup_errors")
        path = Path(tmp) / "logging.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        previous = os.environ.get("VLLM_LOGGING_CONFIG_PATH")
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)  # read by each new vLLM process at import
        try:
            yield EngineErrors(errors)
        finally:
            if previous is None:
                os.environ.pop("VLLM_LOGGING_CONFIG_PATH", None)
            else:
                os.environ["VLLM_LOGGING_CONFIG_PATH"] = previous


class Reaper:
    """Kills this process's current children when this process dies without `release`."""

    def __init__(self) -> None:
        children = psutil.Process().children(recursive=True)
        marks = [f"{c.pid}:{c.create_time()!r}" for c in children]
        self._watch = subprocess.Popen([sys.executable, "-c", _WATCH, *marks], stdin=subprocess.PIPE,
                                       start_new_session=True, text=True)

    def release(self) -> None:
        """The children ended cleanly: stop watching."""
        if self._watch.stdin is not None and not self._watch.stdin.closed:
            self._watch.stdin.write("done")
            self._watch.stdin.close()
        self._watch.wait(timeout=10)
