"""Running the choices of a generation request and framing them as server-sent events.

Shared by chat and completions: both ask a plugin for one iterator of chunks per choice,
run them one after another on the model, and either stream or collect them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from lampstand.plugins.contract import Operation
from lampstand.plugins.errors import LampstandError
from lampstand.plugins.types import GenerationChunk, Usage

from .. import protocol as p
from ..leases import Lease, keep_alive_of
from ..model_pool import HostedModel, ModelPool

__all__ = ["generate", "admitted", "run_choices", "primed", "sse_frames", "sse", "new_id", "now", "sum_usage"]

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


async def generate(pool: ModelPool, hosted: HostedModel, keep_alive: str | float | None,
                   operation: Operation[R, GenerationChunk],
                   build: Callable[[], Sequence[R] | Awaitable[Sequence[R]]]
                   ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Admit the request (429 before any work), build its per-choice requests, start generating.

    `build` (plain or async) runs once the request is admitted: a vision request's images are
    read there.
    Errors up to the first chunk (bad input, load failure, full budget) raise here, so they
    are still HTTP errors; the lease is held until the returned iterator ends or is closed.
    """
    async def start(lease: Lease) -> AsyncIterator[tuple[int, GenerationChunk]]:
        built = build()  # a failure here reaches `admitted`, which gives the lease back
        requests = await built if inspect.isawaitable(built) else built
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"model": hosted.id, "requests": repr(requests)[:4000]})
        async for item in run_choices(lease, operation, requests):
            yield item

    return await admitted(pool, hosted, keep_alive, start)


async def admitted(pool: ModelPool, hosted: HostedModel, keep_alive: str | float | None,
                   start: Callable[[Lease], AsyncIterator[T]], lease: Lease | None = None) -> AsyncIterator[T]:
    """Admit a request (429 before any work), then `start(lease)` and run it to its first item.

    Errors up to the first item raise here; the lease (`lease` when the request was admitted
    already) is held until the returned iterator ends or is closed, and given back at once if
    starting fails.
    """
    lease = lease or pool.admit(hosted, keep_alive_of(keep_alive))
    try:
        return await primed(start(lease))
    except BaseException:
        lease.release()
        raise


async def run_choices(lease: Lease, operation: Operation[R, GenerationChunk],
                      requests: Sequence[R]) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Each request's chunks, tagged with its choice index, all on one turn: side by side when
    the model runs several requests at once (continuous batching), else one after another.

    Counts time to first token, inter-token latency, tokens and finish reasons (the lease
    counts the request's latency as a whole).
    """
    metrics, model = lease.metrics, lease.model_id
    inter_token = metrics.itl.labels(model)  # resolved once: observed on every chunk
    arrived = time.monotonic()
    first: float | None = None
    last = arrived
    prompt_tokens = completion_tokens = 0
    finish: str | None = None
    together = len(requests) > 1 and lease.hosted.admission.max_concurrency > 1
    chunks = (_side_by_side if together else _in_turn)(lease, operation, requests)
    async with lease, aclosing(chunks):  # closed first: a merge's tasks end before the turn is given back
        async for index, chunk in chunks:
            now_ = time.monotonic()
            if first is None:
                first = now_
                metrics.ttft.labels(model).observe(now_ - arrived)
            else:
                inter_token.observe(now_ - last)
            last = now_
            if chunk.usage is not None:
                prompt_tokens += chunk.usage.prompt_tokens
                completion_tokens += chunk.usage.completion_tokens
                finish = chunk.finish_reason or finish
            yield index, chunk
    metrics.prompt_tokens.labels(model).inc(prompt_tokens)
    metrics.generation_tokens.labels(model).inc(completion_tokens)
    metrics.success.labels(model, finish or "unknown").inc()
    log.info("generation finished", extra={
        "model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "finish_reason": finish, "choices": len(requests),
        "ttft_s": round((first or last) - arrived, 4), "seconds": round(last - arrived, 4)})


async def _in_turn(lease: Lease, operation: Operation[R, GenerationChunk],
                   requests: Sequence[R]) -> AsyncIterator[tuple[int, GenerationChunk]]:
    for index, request in enumerate(requests):
        async for chunk in lease.stream(operation, request):
            yield index, chunk


async def _side_by_side(lease: Lease, operation: Operation[R, GenerationChunk],
                        requests: Sequence[R]) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Every request's stream at once, chunks in the order they come; the first failure ends all."""
    arrived: asyncio.Queue[tuple[int, GenerationChunk | Exception | None]] = asyncio.Queue()

    async def pump(index: int, request: R) -> None:
        try:
            async for chunk in lease.stream(operation, request):
                await arrived.put((index, chunk))
        except Exception as exc:
            await arrived.put((index, exc))
            return
        await arrived.put((index, None))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        running = len(tasks)
        while running:
            index, item = await arrived.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                running -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
    counted = [u for i, u in usages.items() if i % per_prompt == 0]
    prompt = sum(u.prompt_tokens for u in counted)
    completion = sum(u.completion_tokens for u in usages.values())
    usage = p.UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    if any(u.cached_tokens is not None for u in counted):
        usage.prompt_tokens_details = p.PromptTokensDetails(cached_tokens=sum(u.cached_tokens or 0 for u in counted))
    return usage
