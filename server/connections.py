"""The HTTP connection layer: uvicorn's h11 protocol with a header deadline and a connection cap.

uvicorn waits for a request's headers as long as bytes keep coming, so a client trickling a
header a second holds a connection forever, and it accepts any number of connections. Here a
connection must finish each request's headers within `header_timeout` seconds of opening (or of
its previous response), or it gets 408 and is closed; beyond `max_connections` open at once, a
new connection gets 503 and is closed. Both answers are the OpenAI error envelope.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from lampstand.plugins.errors import LampstandError, Overloaded, SlowClient

__all__ = ["guarded_protocol"]

_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


def _raw_response(error: LampstandError) -> bytes:
    body = json.dumps(error.envelope()).encode()
    retry = f"retry-after: {error.retry_after}\r\n" if isinstance(error, Overloaded) else ""
    head = (f"HTTP/1.1 {error.status_code} {_REASONS[error.status_code]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{retry}connection: close\r\n\r\n")
    return head.encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """One connection; the limits are class attributes set by `guarded_protocol`."""

    header_timeout = 10.0
    max_connections = 512
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(Overloaded(f"the server has {self.max_connections} connections open; try again",
                                    retry_after=1))
            return
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self._headers_done():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers get their own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_done(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._headers_done() and not self.transport.is_closing():
            self._refuse(SlowClient(f"the request's headers took longer than {self.header_timeout:g} s"))

    def _refuse(self, error: LampstandError) -> None:
        self.transport.write(_raw_response(error))
        self.transport.close()


def guarded_protocol(header_timeout: float, max_connections: int) -> Any:
    """The protocol class uvicorn should use, with these limits."""
    return type("LampstandH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": header_timeout, "max_connections": max_connections})
