"""Running the app under uvicorn: the bind check, header limits and the SIGTERM drain.

On the first SIGTERM or SIGINT the server drains: new requests get 503, requests in flight
get `shutdown_timeout` seconds to finish, the rest end with a `shutting_down` error, then
uvicorn stops and the lifespan stops every worker. The process exits 0. A second signal
forces the exit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from types import FrameType

import uvicorn

from lampstand.plugins.errors import ConfigError

from .app import create_app
from .config import ServerSettings, Settings
from .connections import guarded_protocol
from .routes.deps import ServerState

__all__ = ["check_bind", "serve", "LampstandServer"]

log = logging.getLogger(__name__)
MAX_HEADER_BUFFER = 1024 * 1024  # h11's own ceiling; our 431 limit sits well below it


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_bind(server: ServerSettings) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if not _is_loopback(server.host) and not server.api_keys:
        raise ConfigError(f"refusing to listen on {server.host} without an API key: set [server] api_keys "
                          "(or LAMPSTAND_SERVER__API_KEYS), or bind 127.0.0.1")


class LampstandServer(uvicorn.Server):
    """uvicorn, with a drain before the shutdown."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.drain_requested = False
        self.draining: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_requested or self.loop is None:
            return super().handle_exit(sig, frame)  # second signal: stop now
        self.drain_requested = True
        self.loop.call_soon_threadsafe(self._start_drain, sig)  # safe from a signal handler

    def _start_drain(self, sig: int) -> None:
        log.info("draining", extra={"signal": signal.Signals(sig).name,
                                    "shutdown_timeout": self.state.settings.server.shutdown_timeout})
        self.draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.state.pool.drain(self.state.settings.server.shutdown_timeout)
        finally:
            self.should_exit = True


def serve(settings: Settings, state: ServerState) -> None:
    """Run the server until it is told to stop."""
    check_bind(settings.server)
    server = settings.server
    config = uvicorn.Config(
        create_app(settings, state), host=server.host, port=server.port, log_config=None,
        log_level=server.log_level, http=guarded_protocol(server.header_timeout, server.max_connections),
        h11_max_incomplete_event_size=MAX_HEADER_BUFFER, timeout_graceful_shutdown=5,
    )
    LampstandServer(config, state).run()
