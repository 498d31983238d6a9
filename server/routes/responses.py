"""Turns a serving result into an HTTP response: JSON for objects, SSE for streams.

Also: cancelling non-streaming work when the client goes away (streams are cancelled by
the streaming response itself), and the error responses every route documents.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..protocol import ErrorResponse
from ..protocol import Response as ProtocolResponse

__all__ = ["json_or_stream", "answer", "ERROR_RESPONSES", "CLIENT_CLOSED"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"; nobody receives it
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in (
        (400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Unknown model"),
        (413, "Body too large"), (424, "The model could not be loaded"), (429, "The model's queue is full"),
        (431, "Headers too large"), (502, "The model's worker died"),
        (503, "Memory budget full or shutting down"), (504, "Request timeout"),
    )
}


Result = ProtocolResponse | AsyncIterator[str] | tuple[str, str]


def json_or_stream(result: Result) -> Response:
    """JSON body for a protocol object; `text/event-stream` for a stream of SSE frames; a
    rendered `(body, media type)` pair as it is (transcripts as text, SRT or VTT)."""
    if isinstance(result, ProtocolResponse):
        return Response(result.to_json(), media_type="application/json")
    if isinstance(result, tuple):
        body, media_type = result
        return Response(body, media_type=media_type)
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


async def answer(request: Request, work: Awaitable[Result]) -> Response:
    """Await `work`, cancelling it if the client disconnects first (its model turn is freed)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return json_or_stream(await task)
    except asyncio.CancelledError:
        if not watcher.done() or not task.cancelled():
            raise  # the server itself is cancelling this request
        return Response(status_code=CLIENT_CLOSED)
    finally:
        watcher.cancel()
