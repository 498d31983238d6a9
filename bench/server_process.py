"""Shared by the benchmarks: run `lampstand serve` on a free loopback port for one block."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from lampstand.plugins.sources import BUNDLED_MODELS, bundled_path

__all__ = ["SMOLLM", "MINILM", "WHISPER", "free_port", "print_load", "running_server", "stop_process",
           "wait_healthy"]


def _require(path: Path | None, package: str) -> Path:
    if path is None:
        sys.exit(f"bundled model missing: install the {package} package (make install)")
    return path


_BUNDLED = {"SMOLLM": BUNDLED_MODELS[0], "MINILM": BUNDLED_MODELS[1], "WHISPER": BUNDLED_MODELS[2]}


def __getattr__(name: str) -> Path:
    """SMOLLM, MINILM, WHISPER: a bundled model's path, looked up when a bench first names it
    (a bench that needs none of them runs without their packages)."""
    if name not in _BUNDLED:
        raise AttributeError(name)
    return _require(bundled_path(_BUNDLED[name]), _BUNDLED[name].package)


def print_load(when: str) -> None:
    """The 1-minute load average, to tell whether other work on the machine skewed the figures."""
    print(f"load average {when}: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout_s`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path | None, timeout_s: float) -> None:
    """Wait until `url`/health answers 200; the server's `log` (when kept) explains a failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text() if log else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become healthy in {timeout_s:.0f} s:\n{log.read_text() if log else ''}")


@contextmanager
def running_server(config: str, port: int | None = None, timeout_s: float = 90) -> Iterator[str]:
    """Serve `config` (TOML) on 127.0.0.1 and yield its base URL; stop it on exit."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="lampstand-bench-") as tmp:
        config_path, log = Path(tmp) / "lampstand.toml", Path(tmp) / "server.log"
        config_path.write_text(config)
        command = [sys.executable, "-m", "lampstand.clients", "serve", "--config", str(config_path),
                   "--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, process, log, timeout_s)
            yield url
        finally:
            stop_process(process, 20)
