"""Renders every failure as the OpenAI error envelope; the one place errors become HTTP."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from lampstand.plugins.errors import InvalidRequest, LampstandError, Overloaded

__all__ = ["install_error_handlers", "error_response"]

log = logging.getLogger(__name__)
HTTP_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def error_response(status: int, message: str, error_type: str, *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response carrying the envelope."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _lampstand_error(request: Request, exc: Exception) -> JSONResponse:
    err = exc if isinstance(exc, LampstandError) else LampstandError(str(exc))
    headers = {"Retry-After": str(err.retry_after)} if isinstance(err, Overloaded) else None
    return JSONResponse(err.envelope(), status_code=err.status_code, headers=headers)


def _location(loc: tuple) -> str | None:  # type: ignore[type-arg]
    parts = [str(x) for x in loc if x != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    param = _location(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request."
    else:
        message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid value')}"
    return JSONResponse(InvalidRequest(message, param=param).envelope(), status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return error_response(status, str(detail), HTTP_TYPES.get(status, "invalid_request_error"),
                          headers=_allow(request) if status == 405 else getattr(exc, "headers", None))


def _allow(request: Request) -> dict[str, str]:
    """`Allow` with the methods of every route of the path the request matched (one path may
    have several routes). The path is that of the first route matching it, as the router
    decides: `/v1/models/x/load` is the load route's, not the catch-all `/v1/models/{id:path}`'s."""
    from starlette.routing import Match

    routes = [r for r in request.app.router.routes if r.matches(request.scope)[0] != Match.NONE]
    path = getattr(routes[0], "path_format", None) if routes else None
    methods: set[str] = set()
    for route in routes:
        if getattr(route, "path_format", None) == path:
            methods |= set(getattr(route, "methods", None) or ())
    return {"Allow": ", ".join(sorted(methods))}


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "The server had an error while processing your request.", "server_error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception kind to its envelope."""
    app.add_exception_handler(LampstandError, _lampstand_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
