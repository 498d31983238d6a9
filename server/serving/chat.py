"""Serving /v1/chat/completions: plugin chunks to OpenAI chat objects, streamed or whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lampstand.plugins.contract import CHAT, Capability
from lampstand.plugins.types import ChatRequest, GenerationChunk, TokenLogprob, ToolCallDelta, Usage

from .. import protocol as p
from ..config import ServerSettings
from ..model_pool import ModelPool
from .convert import chat_request, seeded
from .generation import generate, new_id, now, sse_frames, sum_usage
from .image_inputs import ImageReader
from .splice import StringSplice

__all__ = ["AnswerExtras", "create_chat_completion", "start_chat"]


Annotate = Callable[[str], list[dict[str, Any]]]  # a choice's finished text -> its message's annotations


@dataclass(frozen=True)
class AnswerExtras:
    """What the server adds to a chat answer it grounded itself (a rag: model, or the
    `file_search` tool): the model that writes it, extension fields on the completion (on the
    first chunk when streamed), and what each choice's finished text adds: a footer to its text,
    annotations to its message (on its finishing chunk when streamed)."""

    chat_model: str
    fields: dict[str, Any]
    footer: Callable[[str], str] | None = None
    annotations: Annotate | None = None

    async def append_footer(self, chunks: AsyncIterator[tuple[int, GenerationChunk]]
                            ) -> AsyncIterator[tuple[int, GenerationChunk]]:
        """The chunks, with each choice's footer added to the text of its finishing chunk."""
        texts: dict[int, list[str]] = {}
        async for index, chunk in chunks:
            texts.setdefault(index, []).append(chunk.text)
            if self.footer is not None and chunk.finish_reason is not None and not chunk.tool_calls:
                chunk = replace(chunk, text=chunk.text + self.footer("".join(texts[index])))
            yield index, chunk


def _logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> p.ChoiceLogprobs:
    return p.ChoiceLogprobs(content=[
        p.TokenLogprobOut(
            token=t.token, logprob=t.logprob, bytes=list(t.bytes),
            top_logprobs=[p.TopLogprobOut(token=a.token, logprob=a.logprob, bytes=list(a.bytes))
                          for a in t.top_logprobs],
        )
        for t in items
    ])


def _tool_call(delta: ToolCallDelta) -> p.ToolCallOut:
    if delta.id is not None:
        return p.ToolCallOut(index=delta.index, id=delta.id, type="function",
                             function=p.FunctionCallOut(name=delta.name, arguments=delta.arguments))
    return p.ToolCallOut(index=delta.index, function=p.FunctionCallOut(arguments=delta.arguments))


@dataclass
class _Choice:
    """One choice accumulated for a non-streaming answer."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, p.ToolCallOut] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.text.append(chunk.text)
        self.logprobs.extend(chunk.logprobs)
        for delta in chunk.tool_calls:
            call = self.calls.setdefault(delta.index, p.ToolCallOut(
                id=delta.id, type="function", function=p.FunctionCallOut(name=delta.name, arguments="")))
            call.function.arguments += delta.arguments
        self.finish = chunk.finish_reason or self.finish

    def message(self, annotate: Annotate | None) -> p.AssistantMessage:
        text = "".join(self.text)
        if self.calls:
            return p.AssistantMessage(content=text or None, tool_calls=list(self.calls.values()))
        if annotate is not None:
            return p.AssistantMessage(content=text, annotations=annotate(text))
        return p.AssistantMessage(content=text)


async def create_chat_completion(pool: ModelPool, settings: ServerSettings, body: p.ChatCompletionRequest,
                                 extras: AnswerExtras | None = None, images: ImageReader | None = None
                                 ) -> p.ChatCompletion | AsyncIterator[str]:
    """A whole `chat.completion`, or the SSE frames of its chunks when `stream` is set.

    With `extras` (a rag: model), `extras.chat_model` writes the answer, which is still
    reported under `body.model`, and carries the sources and their footer.
    """
    chunks = await start_chat(pool, settings, body, extras, images)
    extra = extras.fields if extras is not None else {}
    annotate = extras.annotations if extras is not None else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_frames(_stream(chunks, body.model, body.logprobs, include_usage, extra, annotate))
    return await _collect(chunks, body.model, body.logprobs, extra, annotate)


async def start_chat(pool: ModelPool, settings: ServerSettings, body: p.ChatCompletionRequest,
                     extras: AnswerExtras | None = None, images: ImageReader | None = None
                     ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Admit a chat request and start generating: its chunks by choice index, before any framing.

    Every front end of chat (chat completions, the Responses API) goes through here. A vision
    model's images are read through `images` once the request has joined the model's queue
    (a full queue answers 429 without fetching or decoding them).
    """
    hosted, adapter = pool.target(extras.chat_model if extras else body.model, Capability.CHAT, body.lora_scale)
    reader = images if Capability.VISION in hosted.capabilities else None

    async def build() -> list[ChatRequest]:
        read = await reader.read_messages(body.messages) if reader is not None else {}
        base = chat_request(body, settings, vision=reader is not None, images=read)
        return [replace(base, sampling=seeded(base.sampling, i), adapter=adapter) for i in range(body.n)]

    chunks = await generate(pool, hosted, body.keep_alive, CHAT, build)
    return extras.append_footer(chunks) if extras is not None else chunks


async def _collect(chunks: AsyncIterator[tuple[int, GenerationChunk]], model: str,
                   want_logprobs: bool, extra: dict[str, Any], annotate: Annotate | None) -> p.ChatCompletion:
    choices: dict[int, _Choice] = {}
    usages: dict[int, Usage] = {}
    async for index, chunk in chunks:
        choices.setdefault(index, _Choice()).add(chunk)
        if chunk.usage:
            usages[index] = chunk.usage
    return p.ChatCompletion(
        id=new_id("chatcmpl"), created=now(), model=model,
        choices=[
            p.ChatChoice(index=i, message=c.message(annotate), finish_reason=c.finish,
                         logprobs=_logprobs(c.logprobs) if want_logprobs else None)
            for i, c in sorted(choices.items())
        ],
        usage=sum_usage(usages),
        **extra,
    )


async def _stream(chunks: AsyncIterator[tuple[int, GenerationChunk]], model: str, want_logprobs: bool,
                  include_usage: bool, first_extra: dict[str, Any], annotate: Annotate | None
                  ) -> AsyncIterator[str]:
    ident, created = new_id("chatcmpl"), now()
    extra = {"usage": None} if include_usage else {}

    def frame(choice: p.ChatChunkChoice, **more: Any) -> str:
        return p.ChatCompletionChunk(id=ident, created=created, model=model, choices=[choice],
                                     **extra, **more).to_json()

    def content_only(index: int) -> StringSplice:
        return StringSplice(lambda text: frame(p.ChatChunkChoice(
            index=index, delta=p.ChatDelta(content=text), logprobs=None, finish_reason=None)))

    usages: dict[int, Usage] = {}
    plain: dict[int, StringSplice] = {}
    texts: dict[int, list[str]] = {}
    async for index, chunk in chunks:
        if index not in plain:
            plain[index] = content_only(index)
            yield frame(p.ChatChunkChoice(index=index, delta=p.ChatDelta(role="assistant", content=""),
                                          logprobs=None, finish_reason=None), **first_extra)
        if annotate is not None:
            texts.setdefault(index, []).append(chunk.text)
        if chunk.text and not (chunk.tool_calls or chunk.finish_reason or chunk.usage
                               or want_logprobs and chunk.logprobs):
            yield plain[index](chunk.text)  # most chunks: one token's text
            continue
        delta = p.ChatDelta()
        if chunk.text or not chunk.tool_calls and chunk.finish_reason is None:
            delta.content = chunk.text
        if chunk.tool_calls:
            delta.tool_calls = [_tool_call(d) for d in chunk.tool_calls]
        elif annotate is not None and chunk.finish_reason is not None:
            delta.annotations = annotate("".join(texts[index]))
        yield frame(p.ChatChunkChoice(
            index=index, delta=delta, finish_reason=chunk.finish_reason,
            logprobs=_logprobs(chunk.logprobs) if want_logprobs and chunk.logprobs else None))
        if chunk.usage:
            usages[index] = chunk.usage
    if include_usage:
        yield p.ChatCompletionChunk(id=ident, created=created, model=model, choices=[],
                                    usage=sum_usage(usages)).to_json()
