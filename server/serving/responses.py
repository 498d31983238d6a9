"""Serving /v1/responses on the chat path: a Responses request becomes a chat request, and the
chat model's chunks become Responses output items and typed stream events.

Admission, grammars (JSON schema, forced tools), adapters, vision and metrics are chat's own
(`chat.start_chat`); nothing here generates. What is here: turning input items (and the
stored conversation a `previous_response_id` names) into chat messages, the tools and text
format into chat's, and the chunks into `message` / `function_call` items, streamed as
`response.*` events numbered by `sequence_number`. The stored responses are `ResponseStore`'s.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from lampstand.plugins.errors import ContextLengthExceeded, InvalidRequest, LampstandError, UnsupportedParameter
from lampstand.plugins.types import GenerationChunk, TokenLogprob

from .. import protocol as p
from .. import protocol_responses as r
from ..fine_tuning import FileStore
from ..response_store import ResponseStore, StoredResponse
from ..routes.deps import ServerState
from .chat import start_chat
from .convert import refuse_hosted_tools
from .file_search import FileSearchRun, choice_beside_search, file_search_tool, search_and_ground
from .generation import now
from .rag import ground_rag_chat, is_rag_model
from .splice import StringSplice

__all__ = ["create_response", "get_response", "delete_response", "list_input_items"]

log = logging.getLogger(__name__)

StoredItem = r.InputMessageItem | r.OutputMessage | r.FunctionCallItem | r.FunctionCallOutputItem | r.FileSearchCallItem
STORED_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[r.StoredInputItem])


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- request items to stored items to chat messages ----------------------------------------

def _text_of(parts: Sequence[Any]) -> str:
    return "".join(getattr(part, "text", None) or getattr(part, "refusal", "") for part in parts)


def _stored_part(part: Any, where: str) -> r.InputTextOut | r.InputImageOut | r.OutputText:
    if isinstance(part, r.InputTextPart):
        return r.InputTextOut(text=part.text)
    if isinstance(part, r.InputImagePart):
        if (part.image_url is None) == (part.file_id is None):
            raise InvalidRequest("input_image needs one of image_url (a data: URL, or a URL the server may read) "
                                 "or file_id (an uploaded file)", param=f"{where}.image_url")
        return r.InputImageOut(image_url=part.image_url, file_id=part.file_id, detail=part.detail)
    return r.OutputText(text=_text_of([part]), annotations=getattr(part, "annotations", []))


def stored_input(given: str | list[Any]) -> list[StoredItem]:
    """The request's input as the items `input_items` lists, each with an id."""
    if isinstance(given, str):
        return [r.InputMessageItem(id=_id("msg"), role="user", content=[r.InputTextOut(text=given)])]
    items: list[StoredItem] = []
    for index, item in enumerate(given):
        where = f"input[{index}]"
        if isinstance(item, r.MessageItemIn):
            content = [r.InputTextOut(text=item.content)] if isinstance(item.content, str) else \
                [_stored_part(part, f"{where}.content[{i}]") for i, part in enumerate(item.content)]
            items.append(r.InputMessageItem(id=item.id or _id("msg"), role=item.role, content=content))
        elif isinstance(item, r.FunctionCallItemIn):
            items.append(r.FunctionCallItem(id=item.id or _id("fc"), status="completed", call_id=item.call_id,
                                            name=item.name, arguments=item.arguments))
        elif isinstance(item, r.FileSearchCallItemIn):  # kept in the record; the model sees the search anew
            items.append(r.FileSearchCallItem(id=item.id, status=item.status, queries=item.queries))
        else:
            output = item.output if isinstance(item.output, str) else _text_of(item.output)
            items.append(r.FunctionCallOutputItem(id=item.id or _id("fco"), call_id=item.call_id, output=output))
    return items


def _chat_content(parts: Sequence[Any], file_images: Mapping[str, str]) -> str | list[p.TextPart | p.ImagePart]:
    if not any(isinstance(part, r.InputImageOut) for part in parts):
        return _text_of(parts)
    return [p.ImagePart(type="image_url", image_url=p.ImageURL(
                url=part.image_url or file_images[part.file_id], detail=part.detail))
            if isinstance(part, r.InputImageOut) else p.TextPart(type="text", text=_text_of([part]))
            for part in parts]


IMAGE_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"GIF8", "gif"), (b"RIFF", "webp"), (b"BM", "bmp"))


def _read_file_image(files: FileStore, file_id: str, max_bytes: int) -> str:
    path = files.path(file_id, "file_id")
    if path.stat().st_size > max_bytes:
        raise InvalidRequest(f"the image file {file_id} is larger than {max_bytes} bytes", param="file_id")
    data = path.read_bytes()
    kind = next((name for magic, name in IMAGE_MAGIC if data.startswith(magic)), "unknown")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


async def file_images(files: FileStore, items: Sequence[StoredItem], max_bytes: int) -> dict[str, str]:
    """A data URL for each uploaded file an `input_image` names by `file_id` (404 for an unknown one)."""
    wanted = {part.file_id for item in items if isinstance(item, r.InputMessageItem) for part in item.content
              if isinstance(part, r.InputImageOut) and part.file_id is not None and part.image_url is None}
    return {file_id: await asyncio.to_thread(_read_file_image, files, file_id, max_bytes) for file_id in wanted}


def chat_messages(items: Sequence[StoredItem], file_images: Mapping[str, str] | None = None
                  ) -> list[p.ChatMessageIn]:
    """The conversation as chat messages: a function call joins the assistant turn before it;
    an image named by `file_id` is its data URL from `file_images`."""
    messages: list[p.ChatMessageIn] = []
    for item in items:
        if isinstance(item, (r.InputMessageItem, r.OutputMessage)):
            messages.append(p.ChatMessageIn(role=item.role, content=_chat_content(item.content, file_images or {})))
        elif isinstance(item, r.FileSearchCallItem):
            continue  # each turn searches again, with its own question
        elif isinstance(item, r.FunctionCallItem):
            call = p.ToolCallIn(id=item.call_id, function=p.FunctionCall(name=item.name, arguments=item.arguments))
            if not messages or messages[-1].role != "assistant":
                messages.append(p.ChatMessageIn(role="assistant", content=None))
            messages[-1].tool_calls = [*(messages[-1].tool_calls or []), call]
        else:
            messages.append(p.ChatMessageIn(role="tool", tool_call_id=item.call_id, content=item.output))
    return messages


async def _history(store: ResponseStore, previous_id: str | None) -> list[StoredItem]:
    """Every item of the conversation `previous_id` ends: inputs and outputs, oldest first."""
    if previous_id is None:
        return []
    items: list[StoredItem] = []
    for row in await store.chain(previous_id):
        items += STORED_ITEMS.validate_json(row.input_items)
        items += r.ResponseObject.model_validate_json(row.body).output
    return items


# -- tools and text format ---------------------------------------------------------------

SERVED_HOSTED_TOOLS = ("file_search",)  # run by the server (file_search.py), never shown to the model


def _chat_tools(tools: Sequence[r.FunctionToolIn | r.HostedToolIn]) -> list[p.ToolDefinition]:
    """The function tools, as chat's; a server-side tool this server does not run is a 400."""
    refuse_hosted_tools(tools, SERVED_HOSTED_TOOLS)
    return [p.ToolDefinition(type="function", function=p.FunctionDefinition(
                name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict))
            for tool in tools if isinstance(tool, r.FunctionToolIn)]


def _tool_choice(choice: Any, tools: Sequence[r.FunctionToolIn | r.HostedToolIn]) -> Any:
    if any(getattr(t, "type", None) in SERVED_HOSTED_TOOLS for t in tools):
        choice = choice_beside_search(choice, any(isinstance(t, r.FunctionToolIn) for t in tools))
    if isinstance(choice, r.NamedFunctionChoice):
        return p.NamedToolChoice(type="function", function=p.NamedFunction(name=choice.name))
    if isinstance(choice, r.HostedToolChoice):
        if choice.type in SERVED_HOSTED_TOOLS and any(getattr(t, "type", None) == choice.type for t in tools):
            return None  # the server runs it before the model answers
        raise UnsupportedParameter(f"tool_choice '{choice.type}' names a tool this server does not run, or one "
                                   "the request's tools do not include", param="tool_choice")
    return choice


def _response_format(text: r.TextConfigIn | None) -> p.ResponseFormatIn | None:
    fmt = text.format if text else None
    if fmt is None or fmt.type != "json_schema":
        return p.ResponseFormatIn(type=fmt.type) if fmt else None
    if fmt.schema_ is None:
        raise InvalidRequest("text.format json_schema needs a schema", param="text.format.schema")
    return p.ResponseFormatIn(type="json_schema", json_schema=p.JsonSchemaFormat(
        name=fmt.name or "response", description=fmt.description, schema=fmt.schema_, strict=fmt.strict))


def chat_body(body: r.ResponsesRequest, messages: list[p.ChatMessageIn]) -> p.ChatCompletionRequest:
    """The chat request that answers `body`, over the conversation `messages`."""
    if body.background and not body.store:
        raise InvalidRequest("a background response must be stored (store: true): it is read back by its id",
                             param="store")
    if body.background and body.stream:
        raise UnsupportedParameter("background responses are not streamed here; poll GET /v1/responses/{id}",
                                   param="stream")
    if not messages:
        raise InvalidRequest("input is empty: send a message (or previous_response_id)", param="input")
    passed = ("temperature", "top_p", "seed", "top_k", "min_p", "repeat_penalty", "logit_bias", "keep_alive",
              "lora_scale", "user")  # chat's own fields, under the same names
    sampling = {name: getattr(body, name) for name in passed if getattr(body, name) is not None}
    if body.instructions:
        messages = [p.ChatMessageIn(role="system", content=body.instructions), *messages]
    logprobs = "message.output_text.logprobs" in (body.include or [])
    try:
        return p.ChatCompletionRequest(
            model=body.model, messages=messages, max_tokens=body.max_output_tokens,
            logprobs=logprobs, top_logprobs=body.top_logprobs if logprobs else None,
            tools=_chat_tools(body.tools) or None, tool_choice=_tool_choice(body.tool_choice, body.tools),
            parallel_tool_calls=body.parallel_tool_calls, response_format=_response_format(body.text), **sampling)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequest(f"input: {first['msg']}", param="input") from None


# -- the answer as output items and events -----------------------------------------------

def _frame(event: Any) -> str:
    return f"event: {event.type}\ndata: {event.to_json()}\n\n"


class _NumberedSplice:
    """A text-delta frame rendered once per item; each token splices its text and number in.
    `sequence_number` is the event's last field, so the rendering ends `...":0}`."""

    def __init__(self, item_id: str, output_index: int) -> None:
        self._splice = StringSplice(lambda text: r.OutputTextDeltaEvent(
            item_id=item_id, output_index=output_index, content_index=0, delta=text, sequence_number=0).to_json())

    def __call__(self, text: str, sequence_number: int) -> str:
        return f"event: response.output_text.delta\ndata: {self._splice(text)[:-2]}{sequence_number}}}\n\n"


def _logprob(token: TokenLogprob) -> dict[str, Any]:
    """One token's logprob in the Responses shape (`message.output_text.logprobs`)."""
    return {"token": token.token, "bytes": list(token.bytes), "logprob": token.logprob,
            "top_logprobs": [{"token": t.token, "bytes": list(t.bytes), "logprob": t.logprob}
                             for t in token.top_logprobs]}


class ResponseWriter:
    """Builds the response from chat chunks and, when streaming, the events that tell it."""

    def __init__(self, response: r.ResponseObject, streaming: bool, search: FileSearchRun | None = None) -> None:
        self.response = response
        self.streaming = streaming
        self.search = search
        self.frames: list[str] = []
        self._number = 0
        self._message: r.OutputMessage | None = None
        self._text: list[str] = []
        self._delta: _NumberedSplice | None = None
        self._calls: dict[int, r.FunctionCallItem] = {}  # open calls, by the chat tool-call index
        self._finish: str | None = None
        self._usage: r.ResponseUsage | None = None
        self._logprobs: list[dict[str, Any]] = []  # of the open message, when the request includes them

    def _emit(self, event_type: type[Any], **fields: Any) -> None:
        if self.streaming:
            self.frames.append(_frame(event_type(sequence_number=self._next(), **fields)))

    def _next(self) -> int:
        self._number += 1
        return self._number - 1

    def lifecycle(self, kind: str) -> None:
        self._emit(r.ResponseLifecycleEvent, type=kind, response=self.response)

    def _add_item(self, item: r.OutputMessage | r.FunctionCallItem | r.FileSearchCallItem) -> int:
        self.response.output.append(item)
        index = len(self.response.output) - 1
        self._emit(r.OutputItemEvent, type="response.output_item.added", output_index=index,
                   item=item.model_copy(update={"status": "in_progress"}) if self.streaming else item)
        return index

    def add_file_search(self) -> None:
        """The server's search, done before the model answers, as its item and events."""
        if self.search is None:
            return
        call = self.search.call
        index = self._add_item(call)
        for stage in ("in_progress", "searching", "completed"):
            self._emit(r.FileSearchCallEvent, type=f"response.file_search_call.{stage}", item_id=call.id,
                       output_index=index)
        self._emit(r.OutputItemEvent, type="response.output_item.done", output_index=index, item=call)

    def _open_message(self) -> None:
        self._message = r.OutputMessage(id=_id("msg"), status="in_progress", content=[])
        index = self._add_item(self._message)
        self._emit(r.ContentPartEvent, type="response.content_part.added", item_id=self._message.id,
                   output_index=index, content_index=0, part=r.OutputText(text=""))
        self._delta = _NumberedSplice(self._message.id, index) if self.streaming else None

    def add(self, chunk: GenerationChunk) -> None:
        """One chat chunk: text goes to the open message, tool-call deltas to their calls."""
        if chunk.text:
            if self._message is None:
                self._open_message()
            self._text.append(chunk.text)
            logprobs = [_logprob(t) for t in chunk.logprobs]
            self._logprobs += logprobs
            if logprobs:  # a delta with logprobs is rendered whole, not spliced
                self._emit(r.OutputTextDeltaEvent, item_id=self._message.id, content_index=0, delta=chunk.text,
                           output_index=self.response.output.index(self._message), logprobs=logprobs)
            elif self._delta is not None:
                self.frames.append(self._delta(chunk.text, self._next()))
        for delta in chunk.tool_calls:
            if delta.id is not None:
                self._close_message("completed")
                call = r.FunctionCallItem(id=_id("fc"), status="in_progress", call_id=delta.id,
                                          name=delta.name or "", arguments="")
                self._calls[delta.index] = call
                self._add_item(call)
            call = self._calls[delta.index]
            call.arguments += delta.arguments
            if delta.arguments:
                self._emit(r.FunctionCallArgumentsDeltaEvent, item_id=call.id,
                           output_index=self.response.output.index(call), delta=delta.arguments)
        self._finish = chunk.finish_reason or self._finish
        if chunk.usage is not None:
            cached = chunk.usage.cached_tokens or 0
            self._usage = r.ResponseUsage(
                input_tokens=chunk.usage.prompt_tokens, output_tokens=chunk.usage.completion_tokens,
                input_tokens_details=r.InputTokensDetails(cached_tokens=cached),
                output_tokens_details=r.OutputTokensDetails(), total_tokens=chunk.usage.total_tokens)

    def _close_message(self, status: str) -> None:
        message = self._message
        if message is None:
            return
        index, text = self.response.output.index(message), "".join(self._text)
        part = r.OutputText(text=text, annotations=self.search.annotations(text) if self.search else [],
                            logprobs=self._logprobs)
        for number, annotation in enumerate(part.annotations):
            self._emit(r.AnnotationAddedEvent, item_id=message.id, output_index=index, content_index=0,
                       annotation_index=number, annotation=annotation)
        self._emit(r.OutputTextDoneEvent, item_id=message.id, output_index=index, content_index=0, text=text,
                   logprobs=self._logprobs)
        self._emit(r.ContentPartEvent, type="response.content_part.done", item_id=message.id,
                   output_index=index, content_index=0, part=part)
        message.content, message.status = [part], status  # type: ignore[assignment]
        self._emit(r.OutputItemEvent, type="response.output_item.done", output_index=index, item=message)
        self._message, self._text, self._delta, self._logprobs = None, [], None, []

    def finish(self) -> None:
        """Close every open item and set the response's status, usage and output."""
        incomplete = self._finish == "length"
        status = "incomplete" if incomplete else "completed"
        if not any(item.type != "file_search_call" for item in self.response.output):
            self._open_message()  # an empty answer is still one (empty) message
        self._close_message(status)
        for call in self._calls.values():
            index = self.response.output.index(call)
            self._emit(r.FunctionCallArgumentsDoneEvent, item_id=call.id, output_index=index, name=call.name,
                       arguments=call.arguments)
            call.status = status  # type: ignore[assignment]
            self._emit(r.OutputItemEvent, type="response.output_item.done", output_index=index, item=call)
        self._calls = {}
        self.response.status = status  # type: ignore[assignment]
        self.response.usage = self._usage
        if incomplete:
            self.response.incomplete_details = r.IncompleteDetails(reason="max_output_tokens")
        self.lifecycle(f"response.{status}")

    def fail(self, exc: LampstandError) -> None:
        """The model failed mid-answer: an `error` event, then `response.failed`."""
        self._emit(r.ErrorEvent, code=exc.code or exc.error_type, message=exc.message, param=exc.param)
        if self._message is not None:  # what was said before the failure stays in the stored response
            self._message.content = [r.OutputText(text="".join(self._text))]
        self.response.status = "failed"
        self.response.error = r.ResponseErrorOut(code="server_error", message=exc.message)
        self.lifecycle("response.failed")

    def cancel(self) -> None:
        """Cancelled mid-answer (a background response): what was said so far stays."""
        if self._message is not None:
            self._message.content = [r.OutputText(text="".join(self._text))]
            self._message.status = "incomplete"
        for call in self._calls.values():
            call.status = "incomplete"
        self.response.status = "cancelled"

    def take(self) -> list[str]:
        frames, self.frames = self.frames, []
        return frames

    def take_joined(self) -> str:
        """The frames so far as one string (most chunks make exactly one: a token's delta)."""
        frames = self.frames
        joined = frames[0] if len(frames) == 1 else "".join(frames)
        frames.clear()
        return joined


# -- serving -----------------------------------------------------------------------------

def _echo(body: r.ResponsesRequest, ident: str) -> r.ResponseObject:
    fmt = body.text.format if body.text and body.text.format else r.TextFormatIn(type="text")
    choice = body.tool_choice or "auto"
    return r.ResponseObject(
        id=ident, created_at=now(), status="in_progress", background=bool(body.background), error=None,
        incomplete_details=None,
        instructions=body.instructions, max_output_tokens=body.max_output_tokens, model=body.model, output=[],
        parallel_tool_calls=body.parallel_tool_calls, previous_response_id=body.previous_response_id,
        store=body.store, temperature=1.0 if body.temperature is None else body.temperature,
        text={"format": fmt.model_dump(by_alias=True, exclude_none=True)},
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(exclude_none=True),
        tools=[tool.model_dump(by_alias=True, exclude_none=True) for tool in body.tools],
        top_p=1.0 if body.top_p is None else body.top_p, truncation=body.truncation, usage=None, user=body.user,
        metadata=body.metadata or {})


async def _start(state: ServerState, chat: p.ChatCompletionRequest
                 ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    if is_rag_model(chat.model):
        grounded, extras = await ground_rag_chat(state, chat)
        return await start_chat(state.pool, state.settings.server, grounded, extras)
    return await start_chat(state.pool, state.settings.server, chat, images=state.images)


async def _start_truncating(state: ServerState, chat: p.ChatCompletionRequest, truncate: bool
                            ) -> AsyncIterator[tuple[int, GenerationChunk]]:
    """Start the chat; with `truncation: "auto"`, drop the oldest turns until the prompt fits."""
    while True:
        try:
            return await _start(state, chat)
        except ContextLengthExceeded:
            kept = [m for m in chat.messages if m.role in ("system", "developer")]
            turns = [m for m in chat.messages if m.role not in ("system", "developer")]
            if not truncate or len(turns) <= 1:
                raise
            turns = turns[1:]
            while len(turns) > 1 and turns[0].role in ("tool", "assistant"):
                turns = turns[1:]  # a conversation restarts at a user turn
            chat = chat.model_copy(update={"messages": kept + turns})


async def _file_search(state: ServerState, body: r.ResponsesRequest, chat: p.ChatCompletionRequest
                       ) -> tuple[p.ChatCompletionRequest, FileSearchRun | None]:
    """With a `file_search` tool (and tool_choice not "none"): the search, and the chat request
    grounded in what it found."""
    tool = file_search_tool(body.tools)
    if tool is None or body.tool_choice == "none":
        return chat, None
    return await search_and_ground(state, tool, chat,
                                   include_results="file_search_call.results" in (body.include or []))


async def create_response(state: ServerState, store: ResponseStore, body: r.ResponsesRequest
                          ) -> r.ResponseObject | AsyncIterator[str]:
    """The whole response, or its SSE events when `stream` is set; stored when `store` is."""
    given = stored_input(body.input)
    history = await _history(store, body.previous_response_id)
    items = history + given
    images = await file_images(state.fine_tuning.files, items, state.settings.images.max_input_bytes)
    chat, search = await _file_search(state, body, chat_body(body, chat_messages(items, images)))
    writer = ResponseWriter(_echo(body, _id("resp")), streaming=body.stream, search=search)
    if body.background:
        return await _start_background(state, store, writer, chat, body.truncation == "auto", given)
    chunks = await _start_truncating(state, chat, body.truncation == "auto")
    if body.stream:
        return _stream(writer, chunks, store, given)
    writer.add_file_search()
    async with aclosing(chunks):
        async for _, chunk in chunks:
            writer.add(chunk)
    writer.finish()
    await _keep(store, writer.response, given)
    return writer.response


async def _start_background(state: ServerState, store: ResponseStore, writer: ResponseWriter,
                            chat: p.ChatCompletionRequest, truncate: bool, given: list[StoredItem]
                            ) -> r.ResponseObject:
    """Store the response `queued` and answer it in a task of the server."""
    writer.response.status = "queued"
    await _keep(store, writer.response, given)
    queued = writer.response.model_copy(deep=True)

    async def run() -> None:
        try:
            chunks = await _start_truncating(state, chat, truncate)
            writer.response.status = "in_progress"
            await _keep(store, writer.response, given)
            writer.add_file_search()
            async with aclosing(chunks):
                async for _, chunk in chunks:
                    writer.add(chunk)
            writer.finish()
        except asyncio.CancelledError:
            writer.cancel()
        except LampstandError as exc:
            writer.fail(exc)
        except Exception:  # recorded in the response, never lost silently
            log.exception("background response failed")
            writer.fail(LampstandError("the model failed while generating"))
        await asyncio.shield(_keep(store, writer.response, given))

    state.background_responses.start(writer.response.id, run)
    return queued


async def _stream(writer: ResponseWriter, chunks: AsyncIterator[tuple[int, GenerationChunk]],
                  store: ResponseStore, given: list[StoredItem]) -> AsyncIterator[str]:
    writer.lifecycle("response.created")
    writer.lifecycle("response.in_progress")
    writer.add_file_search()
    for frame in writer.take():
        yield frame
    try:
        async with aclosing(chunks):
            async for _, chunk in chunks:
                writer.add(chunk)
                if writer.frames:
                    yield writer.take_joined()
        writer.finish()
    except LampstandError as exc:
        writer.fail(exc)
    except Exception:  # report, never drop the connection without a word
        log.exception("response failed mid-stream")
        writer.fail(LampstandError("the model failed while generating"))
    final = writer.take()
    for frame in final[:-1]:
        yield frame
    await _keep(store, writer.response, given)  # stored before the client hears it is done
    yield final[-1]


async def _keep(store: ResponseStore, response: r.ResponseObject, given: list[StoredItem]) -> None:
    if response.store:
        await store.put(StoredResponse(id=response.id, previous_id=response.previous_response_id,
                                       body=response.to_json(), input_items=_items_json(given)))


def _items_json(items: Sequence[StoredItem]) -> str:
    return "[" + ",".join(item.to_json() for item in items) + "]"


async def get_response(store: ResponseStore, ident: str) -> r.ResponseObject:
    """A stored response (404 when unknown, deleted or expired)."""
    return r.ResponseObject.model_validate_json((await store.require(ident)).body)


async def delete_response(store: ResponseStore, ident: str) -> r.ResponseDeleted:
    """Forget a stored response (404 when there is none)."""
    if not await store.delete(ident):
        await store.require(ident)  # raises the 404
    return r.ResponseDeleted(id=ident)


async def list_input_items(store: ResponseStore, ident: str, *, limit: int, order: str,
                           after: str | None) -> r.InputItemList:
    """A page of the input items a stored response was given (`order` "asc" or "desc")."""
    items = STORED_ITEMS.validate_json((await store.require(ident)).input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            raise InvalidRequest(f"no input item '{after}' in response '{ident}'", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return r.InputItemList(data=page, first_id=page[0].id if page else None,
                           last_id=page[-1].id if page else None, has_more=len(items) > limit)

