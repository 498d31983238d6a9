"""`lampstand chat`: stream an answer over HTTP, or from a model loaded in this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .wire import post_events

__all__ = ["chat_over_http", "chat_in_process"]


def chat_over_http(url: str, api_key: str | None, params: dict[str, Any]) -> Iterator[str]:
    """Text deltas of a streamed chat completion from a running server."""
    body = {k: v for k, v in params.items() if v is not None} | {"stream": True}
    for event in post_events(f"{url.rstrip('/')}/v1/chat/completions", body, api_key):
        for choice in event.get("choices", []):
            yield choice["delta"].get("content") or ""


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
