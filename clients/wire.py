"""How every HTTP client command reads the server: error envelopes and server-sent events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from lampstand.plugins.errors import LampstandError

__all__ = ["bearer", "check", "post_events", "sse_events", "unreachable"]


def bearer(api_key: str | None) -> dict[str, str]:
    """The Authorization header for `api_key`, if any."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def unreachable(url: str, exc: httpx.HTTPError) -> LampstandError:
    """The one-line error for a server that cannot be reached."""
    return LampstandError(f"cannot reach {url}: {exc}. Is `lampstand serve` running?")


def check(response: httpx.Response) -> None:
    """Raise `LampstandError("STATUS: message")` for a 4xx/5xx answer (streamed or not)."""
    if response.status_code < 400:
        return
    response.read()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    raise LampstandError(f"{response.status_code}: {message}")


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON events of an SSE answer up to `[DONE]`; an error event raises."""
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            if "error" in event:
                raise LampstandError(event["error"]["message"])
            yield event


def post_events(url: str, body: dict[str, Any], api_key: str | None) -> Iterator[dict[str, Any]]:
    """POST `body` as JSON and yield the streamed events."""
    try:
        with httpx.stream("POST", url, json=body, headers=bearer(api_key),
                          timeout=httpx.Timeout(10.0, read=None)) as response:
            check(response)
            yield from sse_events(response)
    except httpx.HTTPError as exc:
        raise unreachable(url, exc) from exc
