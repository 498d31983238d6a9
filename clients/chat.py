"""`lampstand chat`: stream an answer over HTTP, or from a model loaded in this process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from lampstand.plugins.errors import LampstandError

__all__ = ["chat_over_http", "chat_in_process"]


def chat_over_http(url: str, api_key: str | None, params: dict[str, Any]) -> Iterator[str]:
    """Text deltas of a streamed chat completion from a running server."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {k: v for k, v in params.items() if v is not None} | {"stream": True}
    try:
        with httpx.stream("POST", f"{url.rstrip('/')}/v1/chat/completions", json=body,
                          headers=headers, timeout=httpx.Timeout(10.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                raise LampstandError(_error_message(response))
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise LampstandError(event["error"]["message"])
                for choice in event.get("choices", []):
                    yield choice["delta"].get("content") or ""
    except httpx.HTTPError as exc:
        raise LampstandError(f"cannot reach {url}: {exc}. Is `lampstand serve` running?") from exc


def _error_message(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


def chat_in_process(settings: Any, params: dict[str, Any]) -> Iterator[str]:
    """Text deltas from the configured model, loaded here without a server."""
    import asyncio

    from lampstand.server import protocol as p
    from lampstand.server.app import build_state
    from lampstand.server.serving.chat import create_chat_completion

    state = build_state(settings)
    body = p.ChatCompletionRequest(**{k: v for k, v in params.items() if v is not None}, stream=False)

    async def run() -> str:
        try:
            result = await create_chat_completion(state.pool, settings.server, body)
            return result.choices[0].message.content or ""  # type: ignore[union-attr]
        finally:
            await state.pool.close()

    yield asyncio.run(run())
