"""Running the choices of a generation request and framing them as server-sent events.

Shared by chat and completions: both ask a plugin for one iterator of chunks per choice,
run them one after another on the model, and either stream or collect them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TypeVar

from lampstand.plugins.contract import Plugin
from lampstand.plugins.errors import LampstandError
from lampstand.plugins.types import GenerationChunk, Usage

from .. import protocol as p
from ..model_pool import HostedModel, ModelPool

__all__ = ["run_choices", "primed", "sse_frames", "sse", "new_id", "now", "sum_usage"]

log = logging.getLogger(__name__)
R = TypeVar("R")
T = TypeVar("T")
SSE_DONE = "data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """`created`: integer seconds."""
    return int(time.time())


def sse(payload: str) -> str:
    """One SSE frame."""
    return f"data: {payload}\n\n"


async def run_choices(pool: ModelPool, hosted: HostedModel, requests: Sequence[R],
                      call: Callable[[Plugin, R], Iterator[GenerationChunk]]
                      ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Each request's chunks, tagged with its choice index, one choice after another."""
    for index, request in enumerate(requests):
        async for chunk in pool.stream(hosted, lambda plugin, r=request: call(plugin, r)):
            yield index, chunk


async def primed(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Start `stream` now, so an error before its first item is still an HTTP error."""
    first = await anext(stream)

    async def resumed() -> AsyncIterator[T]:
        yield first
        async for item in stream:
            yield item

    return resumed()


async def sse_frames(payloads: AsyncIterator[str]) -> AsyncIterator[str]:
    """Frame JSON payloads as SSE; an error mid-stream becomes an error event; end with [DONE]."""
    try:
        async for payload in payloads:
            yield sse(payload)
    except LampstandError as exc:
        yield sse(json.dumps(exc.envelope()))
    except Exception:  # report, never drop the connection without a word
        log.exception("generation failed mid-stream")
        yield sse(json.dumps(LampstandError("the model failed while generating").envelope()))
    yield SSE_DONE


def sum_usage(usages: dict[int, Usage], *, prompts: int = 1) -> p.UsageInfo:
    """Usage over all choices; each prompt counts once however many choices it had."""
    per_prompt = len(usages) // max(prompts, 1) or 1
    prompt = sum(u.prompt_tokens for i, u in usages.items() if i % per_prompt == 0)
    completion = sum(u.completion_tokens for u in usages.values())
    return p.UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
