"""ASGI middleware: request ids, header and body limits, Host and Origin checks, draining, API keys.

Pure ASGI (no BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lampstand.plugins.errors import (
    AuthenticationFailed,
    Forbidden,
    HeadersTooLarge,
    InvalidRequest,
    LampstandError,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
    SlowClient,
)

from .json_check import json_body_problem
from .logs import bind_request, clear_request

__all__ = ["RequestIdMiddleware", "HeaderLimitMiddleware", "HostCheckMiddleware", "DrainMiddleware",
           "BodyLimitMiddleware", "BodyTimeoutMiddleware", "ApiKeyMiddleware", "JsonCheckMiddleware",
           "OriginCheckMiddleware", "allowed_host_names"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PUBLIC_PATHS = {"/health", "/version", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


async def send_error(send: Send, error: LampstandError) -> None:
    """Answer with the envelope before the app has started a response."""
    body = json.dumps(error.envelope()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(error, Overloaded):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
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
        bind_request(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            clear_request()


class HeaderLimitMiddleware:
    """431 for more than `max_count` headers or more than `max_bytes` of them."""

    def __init__(self, app: ASGIApp, max_count: int, max_bytes: int) -> None:
        self.app, self.max_count, self.max_bytes = app, max_count, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", ())
            size = sum(len(k) + len(v) for k, v in headers)
            if len(headers) > self.max_count or size > self.max_bytes:
                return await send_error(send, HeadersTooLarge(
                    f"request headers exceed the limit of {self.max_count} headers or {self.max_bytes} bytes"))
        await self.app(scope, receive, send)


def allowed_host_names(bind_host: str, extra: list[str]) -> set[str] | None:
    """Host header names to accept: loopback, the bind address and `extra`; None accepts any."""
    if "*" in extra:
        return None
    names = {*LOOPBACK_NAMES, *(h.lower().strip("[]") for h in extra)}
    if bind_host not in WILDCARD_BINDS:
        names.add(bind_host.lower().strip("[]"))
    return names


def _host_name(value: bytes) -> str:
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostCheckMiddleware:
    """Refuse requests whose Host header names another site (DNS rebinding)."""

    def __init__(self, app: ASGIApp, allowed: set[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.allowed is not None:
            host = _header(scope, b"host")
            if host is not None and _host_name(host) not in self.allowed:
                shown = host.decode("latin-1")[:100]
                return await send_error(send, InvalidRequest(
                    f"Host {shown!r} is not allowed; add it to [server] allowed_hosts", code="invalid_host"))
        await self.app(scope, receive, send)


class _EarlyAnswer:
    """The app's `send`, for a middleware that may answer while the app is still reading the body.

    Once the middleware has answered, what the app sends goes nowhere (it reads a disconnect);
    once the app has started its response, it is too late to answer.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = self.answered = False

    async def app_send(self, message: Message) -> None:
        if self.answered:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    async def answer(self, error: LampstandError) -> Message:
        """Send `error` as the response, if the app has not begun one; the disconnect for the app."""
        if not self.started:
            self.answered = True
            await send_error(self._send, error)
        return {"type": "http.disconnect"}


class OriginCheckMiddleware:
    """403 for a request a web page sent from another site.

    Browsers name the page's origin on cross-site requests, and some (a form's multipart POST)
    reach the server without a CORS preflight. A request with an `Origin` header passes only
    when that origin is the server itself (its scheme-less host and port equal the Host
    header: the /docs page) or is listed in `cors_origins` (`"*"` lets every origin through);
    clients that are not browsers send no Origin and are not affected.
    """

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.any = "*" in allowed_origins
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            origin = _header(scope, b"origin")
            if origin is not None and not self._allowed(origin.decode("latin-1").strip().lower(), scope):
                shown = origin.decode("latin-1")[:100]
                return await send_error(send, Forbidden(
                    f"requests from the web page at {shown!r} are not allowed; add its origin to "
                    "[server] cors_origins", code="origin_not_allowed"))
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, scope: Scope) -> bool:
        if origin in self.allowed:
            return True
        host = (_header(scope, b"host") or b"").decode("latin-1").strip().lower()
        scheme, _, authority = origin.partition("://")
        return bool(host) and scheme in ("http", "https") and authority == host


class JsonCheckMiddleware:
    """400 `invalid_json` for a body nested too deep or holding a lone surrogate (`json_check`).

    Runs inside the body limit, so what it buffers is bounded; form uploads pass untouched.
    """

    FORMS = (b"multipart/", b"application/x-www-form-urlencoded")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = (_header(scope, b"content-type") or b"").lower()
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or \
                content_type.startswith(self.FORMS):
            return await self.app(scope, receive, send)
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left, or the body limit has answered
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        problem = json_body_problem(body)
        if problem is not None:
            return await send_error(send, InvalidRequest(problem, code="invalid_json"))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class BodyTimeoutMiddleware:
    """408 for a client that stops sending its body for `timeout` seconds mid-way.

    Only while the body is arriving: afterwards `receive` waits for a disconnect (streamed
    responses listen for one) and must wait as long as the response lasts.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_done = False
        early = _EarlyAnswer(send)

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done or early.answered:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                return await early.answer(SlowClient(f"the request body paused for more than {self.timeout:g} s"))
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, early.app_send)


class DrainMiddleware:
    """503 with Retry-After for new requests once the server has begun shutting down."""

    OPEN_PATHS = {"/metrics"}

    def __init__(self, app: ASGIApp, is_draining: Callable[[], bool]) -> None:
        self.app, self.is_draining = app, is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.is_draining() and scope["path"] not in self.OPEN_PATHS:
            return await send_error(send, ShuttingDown("the server is shutting down", retry_after=5))
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over the limit, by declared length or as it streams in.

    `max_bytes` holds everywhere except under the path prefixes of `limits_by_prefix`
    (uploads such as audio files have their own, usually larger, limit).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, limits_by_prefix: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.limits_by_prefix = limits_by_prefix or {}

    def _limit(self, path: str) -> int:
        return next((limit for prefix, limit in self.limits_by_prefix.items() if path.startswith(prefix)),
                    self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit(scope["path"])
        too_large = PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await send_error(send, too_large)
        received = 0
        early = _EarlyAnswer(send)

        # A body without Content-Length (chunked) is cut off here: the 413 goes out at once and
        # the app reads a disconnect (it would turn an exception raised in `receive` into 400).
        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if early.started:
                        raise too_large
                    return await early.answer(too_large)
            return message

        try:
            await self.app(scope, limited_receive, early.app_send)
        except Exception as exc:
            if not (early.answered or isinstance(exc, PayloadTooLarge)):  # too late for a 413 once started
                raise


# The routes that change what the server hosts or holds: (method, path) patterns.
ADMIN_ROUTES = tuple((method, re.compile(pattern)) for method, pattern in (
    ("POST", r"/v1/models/.+/(load|unload)"),
    ("POST", r"/v1/(load|unload)_lora_adapter"),
    ("POST", r"/v1/files"), ("DELETE", r"/v1/files/[^/]+"),
    ("POST", r"/v1/fine_tuning/jobs(/[^/]+/cancel)?"),
    ("POST", r"/v1/indexes(/[^/]+/update)?"), ("DELETE", r"/v1/indexes/[^/]+"),
    ("POST", r"/v1/vector_stores(/[^/]+(/files(/[^/]+)?|/file_batches(/[^/]+/cancel)?)?)?"),
    ("DELETE", r"/v1/vector_stores/[^/]+(/files/[^/]+)?"),
))


def is_admin_route(method: str, path: str) -> bool:
    """Whether `method path` is one of `ADMIN_ROUTES`."""
    return any(method == wanted and pattern.fullmatch(path) for wanted, pattern in ADMIN_ROUTES)


def _matches(token: bytes, keys: list[bytes]) -> bool:
    # compare against every key so the time taken does not depend on which one matched
    return any([hmac.compare_digest(token, key) for key in keys])


class ApiKeyMiddleware:
    """Keys, when configured: `Authorization: Bearer <key>` on every non-public path.

    An API key opens the inference routes; the admin routes (`ADMIN_ROUTES`) need an admin key,
    and an API key there gets 403. An admin key opens every route. With no keys at all (the
    loopback default) nothing is asked.
    """

    def __init__(self, app: ASGIApp, keys: list[str], admin_keys: list[str] | None = None) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.admin_keys = [k.encode() for k in admin_keys or []]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.keys or self.admin_keys) or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        header = _header(scope, b"authorization") or b""
        token = header[7:].strip() if header[:7].lower() == b"bearer " else b""
        admin, user = _matches(token, self.admin_keys), _matches(token, self.keys)
        if is_admin_route(scope["method"], scope["path"]):
            if admin:
                return await self.app(scope, receive, send)
            if user:
                return await send_error(send, Forbidden(
                    "this route needs an admin key ([server] admin_keys); API keys do not open it",
                    code="admin_key_required"))
            return await send_error(send, AuthenticationFailed("Incorrect API key provided."))
        if admin or user or not self.keys:
            return await self.app(scope, receive, send)
        await send_error(send, AuthenticationFailed("Incorrect API key provided."))
