"""`lampstand chat`: stream an answer over HTTP, or from a model loaded in this process."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .wire import post_events

__all__ = ["chat_over_http", "chat_in_process", "user_content"]


def user_content(prompt: str, images: Sequence[Path]) -> str | list[dict[str, Any]]:
    """The user message's content: the prompt, after the images as data URLs when there are any."""
    if not images:
        return prompt
    parts: list[dict[str, Any]] = []
    for path in images:
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts + [{"type": "text", "text": prompt}]


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
            result = await create_chat_completion(state.pool, settings.server, body, images=state.images)
            return result.choices[0].message.content or ""  # type: ignore[union-attr]
        finally:
            await state.pool.close()

    yield asyncio.run(run())
