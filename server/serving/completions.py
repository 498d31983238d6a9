"""Serving /v1/completions: raw prompts (text or token ids), `suffix`, `echo`, legacy logprobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from lampstand.plugins.contract import COMPLETE, Capability
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.types import CompletionRequest, GenerationChunk, TokenLogprob, Usage

from .. import protocol as p
from ..config import ServerSettings
from ..model_pool import ModelPool
from .convert import sampling_params, seeded
from .generation import generate, new_id, now, sse_frames, sum_usage

__all__ = ["create_completion"]


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | tuple[int, ...]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    if all(isinstance(x, int) for x in prompt):
        return [tuple(cast(list[int], prompt))]
    return [x if isinstance(x, str) else tuple(x) for x in cast(list, prompt)]


def _legacy_logprobs(items: list[TokenLogprob], offset: int) -> p.CompletionLogprobs:
    offsets, position = [], offset
    for item in items:
        offsets.append(position)
        position += len(item.token)
    return p.CompletionLogprobs(
        tokens=[t.token for t in items],
        token_logprobs=[t.logprob for t in items],
        top_logprobs=[{a.token: a.logprob for a in t.top_logprobs} for t in items],
        text_offset=offsets,
    )


async def create_completion(pool: ModelPool, settings: ServerSettings,
                            body: p.CompletionRequest) -> p.Completion | AsyncIterator[str]:
    """A whole `text_completion`, or the SSE frames of its chunks when `stream` is set."""
    hosted, adapter = pool.target(body.model, Capability.COMPLETIONS, body.lora_scale)
    if body.best_of not in (None, body.n):
        raise InvalidRequest("best_of is not supported unless equal to n", param="best_of")
    if body.echo and body.logprobs is not None:
        raise InvalidRequest("echo with logprobs is not supported", param="echo")
    prompts = _prompts(body.prompt)
    if len(prompts) * body.n > settings.max_n:
        raise InvalidRequest(f"prompts times n must be at most {settings.max_n}", param="prompt")

    def build() -> list[CompletionRequest]:
        sampling = sampling_params(body, settings, max_tokens=body.max_tokens,
                                   logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0)
        return [CompletionRequest(prompt=prompt, sampling=seeded(sampling, i), suffix=body.suffix, echo=body.echo,
                                  adapter=adapter)
                for prompt in prompts for i in range(body.n)]

    chunks = await generate(pool, hosted, body.keep_alive, COMPLETE, build)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_frames(_stream(chunks, body.model, body.logprobs is not None, include_usage, len(prompts)))
    return await _collect(chunks, body.model, body.logprobs is not None, len(prompts))


async def _collect(chunks: AsyncIterator[tuple[int, GenerationChunk]], model: str,
                   want_logprobs: bool, n_prompts: int) -> p.Completion:
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, list[TokenLogprob]] = {}
    finish: dict[int, str] = {}
    usages: dict[int, Usage] = {}
    async for index, chunk in chunks:
        texts.setdefault(index, []).append(chunk.text)
        logprobs.setdefault(index, []).extend(chunk.logprobs)
        if chunk.finish_reason:
            finish[index] = chunk.finish_reason
        if chunk.usage:
            usages[index] = chunk.usage
    return p.Completion(
        id=new_id("cmpl"), created=now(), model=model,
        choices=[
            p.CompletionChoice(index=i, text="".join(t), finish_reason=finish.get(i),
                               logprobs=_legacy_logprobs(logprobs[i], 0) if want_logprobs else None)
            for i, t in sorted(texts.items())
        ],
        usage=sum_usage(usages, prompts=n_prompts),
    )


async def _stream(chunks: AsyncIterator[tuple[int, GenerationChunk]], model: str, want_logprobs: bool,
                  include_usage: bool, n_prompts: int) -> AsyncIterator[str]:
    ident, created = new_id("cmpl"), now()
    extra = {"usage": None} if include_usage else {}
    usages: dict[int, Usage] = {}
    offsets: dict[int, int] = {}
    async for index, chunk in chunks:
        offset = offsets.get(index, 0)
        offsets[index] = offset + len(chunk.text)
        logprobs = _legacy_logprobs(list(chunk.logprobs), offset) if want_logprobs else None
        choice = p.CompletionChoice(index=index, text=chunk.text, logprobs=logprobs,
                                    finish_reason=chunk.finish_reason)
        yield p.Completion(id=ident, created=created, model=model, choices=[choice], **extra).to_json()
        if chunk.usage:
            usages[index] = chunk.usage
    if include_usage:
        yield p.Completion(id=ident, created=created, model=model, choices=[],
                           usage=sum_usage(usages, prompts=n_prompts)).to_json()
