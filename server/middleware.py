"""ASGI middleware: request ids, the body-size limit and API keys.

Pure ASGI (no BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lampstand.plugins.errors import AuthenticationFailed, LampstandError, PayloadTooLarge

__all__ = ["RequestIdMiddleware", "BodyLimitMiddleware", "ApiKeyMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PUBLIC_PATHS = {"/health", "/version", "/docs", "/openapi.json", "/docs/oauth2-redirect"}


async def send_error(send: Send, error: LampstandError) -> None:
    """Answer with the envelope before the app has started a response."""
    body = json.dumps(error.envelope()).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class RequestIdMiddleware:
    """Echo the client's `x-request-id`, or make one, on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = _header(scope, b"x-request-id")
        request_id = given.decode("latin-1")[:128] if given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, by declared length or as it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLarge(f"request body is larger than the limit of {self.max_bytes} bytes")
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await send_error(send, too_large)
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge as exc:
            if not started:
                await send_error(send, exc)


class ApiKeyMiddleware:
    """When keys are configured, every non-public path needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        header = _header(scope, b"authorization") or b""
        token = header[7:].strip() if header[:7].lower() == b"bearer " else b""
        # compare against every key so the time taken does not depend on which one matched
        matched = [hmac.compare_digest(token, key) for key in self.keys]
        if not any(matched):
            return await send_error(send, AuthenticationFailed("Incorrect API key provided."))
        await self.app(scope, receive, send)
