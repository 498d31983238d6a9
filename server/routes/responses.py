"""Turns a serving result into an HTTP response: JSON for objects, SSE for streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import Response, StreamingResponse

from ..protocol import Response as ProtocolResponse

__all__ = ["json_or_stream"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_or_stream(result: ProtocolResponse | AsyncIterator[str]) -> Response:
    """JSON body for a protocol object; `text/event-stream` for a stream of SSE frames."""
    if isinstance(result, ProtocolResponse):
        return Response(result.to_json(), media_type="application/json")
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)
