"""The Responses API's request, response and stream-event models, with OpenAI's names.

Kept beside `protocol.py` (whose request and response bases they use) so that module stays
one resource family per section. Field order follows OpenAI's wire order; our extensions
are in the marked section of the request. This module never touches a plugin or an engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag

from .protocol import HostedToolIn, Request, Response
from .protocol_vector_stores import AttributeFilter, RankingOptionsIn

__all__ = [
    "ResponsesRequest", "InputItem", "MessageItemIn", "FunctionCallItemIn", "FunctionCallOutputItemIn",
    "InputTextPart", "InputImagePart", "OutputTextPart", "RefusalPart", "FunctionToolIn", "HostedToolIn",
    "NamedFunctionChoice", "HostedToolChoice", "TextFormatIn", "TextConfigIn",
    "OutputText", "OutputMessage", "FunctionCallItem", "FunctionCallOutputItem", "InputMessageItem", "OutputItem",
    "ResponseUsage", "InputTokensDetails", "OutputTokensDetails", "ResponseErrorOut", "IncompleteDetails",
    "ResponseObject", "ResponseDeleted", "InputItemList",
    "ResponseLifecycleEvent", "OutputItemEvent", "ContentPartEvent", "OutputTextDeltaEvent", "OutputTextDoneEvent",
    "FunctionCallArgumentsDeltaEvent", "FunctionCallArgumentsDoneEvent", "ErrorEvent", "STREAM_EVENTS",
    "FileSearchToolIn", "FileSearchCallItemIn", "FileSearchResult", "FileSearchCallItem", "FileSearchCallEvent",
    "AnnotationAddedEvent", "INCLUDABLE",
]


# -- request: input items ----------------------------------------------------------------

class InputTextPart(Request):
    type: Literal["input_text"]
    text: str


class InputImagePart(Request):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] = "auto"


class OutputTextPart(Request):
    """An earlier answer's text, sent back as part of the conversation."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = []


class RefusalPart(Request):
    type: Literal["refusal"]
    refusal: str


InputContent = Annotated[InputTextPart | InputImagePart | OutputTextPart | RefusalPart, Field(discriminator="type")]


class MessageItemIn(Request):
    """A message; `type` may be left out (OpenAI's "easy" input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItemIn(Request):
    """A function call the model made earlier, sent back with its output."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItemIn(Request):
    """What the client's function returned for `call_id`."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputTextPart | InputImagePart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FileSearchCallItemIn(Request):
    """An earlier `file_search_call` sent back with the conversation; kept, never re-run."""

    type: Literal["file_search_call"]
    id: str = Field(min_length=1, max_length=128)
    queries: list[str] = []
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"] = "completed"
    results: list[dict[str, Any]] | None = None


def _item_type(item: Any) -> str:
    kind = item.get("type", "message") if isinstance(item, dict) else getattr(item, "type", "message")
    return kind if isinstance(kind, str) else "message"


InputItem = Annotated[
    Union[Annotated[MessageItemIn, Tag("message")], Annotated[FunctionCallItemIn, Tag("function_call")],
          Annotated[FunctionCallOutputItemIn, Tag("function_call_output")],
          Annotated[FileSearchCallItemIn, Tag("file_search_call")]],
    Discriminator(_item_type),
]


def _input_kind(given: Any) -> str:
    return "text" if isinstance(given, str) else "items"


# Tagged, so that a bad item is reported by its own error, not by the string branch's.
Input = Annotated[Union[Annotated[str, Tag("text")], Annotated[list[InputItem], Tag("items")]],
                  Discriminator(_input_kind)]


# -- request: tools and formats ----------------------------------------------------------

class FunctionToolIn(Request):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FileSearchToolIn(Request):
    """The `file_search` tool: search these vector stores (or folder indexes) for the answer."""

    type: Literal["file_search"]
    vector_store_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]],
                                Field(min_length=1, max_length=16)]
    max_num_results: int = Field(10, ge=1, le=50)
    filters: AttributeFilter | None = None
    ranking_options: RankingOptionsIn | None = None


class NamedFunctionChoice(Request):
    type: Literal["function"]
    name: str


class HostedToolChoice(Request):
    """`{"type": "file_search"}` and the like: forcing a server-side tool."""

    type: Literal["file_search", "web_search", "web_search_preview", "computer_use_preview",
                  "code_interpreter", "image_generation", "mcp", "allowed_tools"]


class TextFormatIn(Request):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfigIn(Request):
    format: TextFormatIn | None = None


# OpenAI's `include` values; the first two change what is returned here (the others name
# items this server never makes, or parts it always returns)
INCLUDABLE = ("file_search_call.results", "message.output_text.logprobs", "message.input_image.image_url",
              "reasoning.encrypted_content", "web_search_call.results", "web_search_call.action.sources",
              "computer_call_output.output.image_url", "code_interpreter_call.outputs")


class ResponsesRequest(Request):
    """POST /v1/responses."""

    model: str
    input: Input = []
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[FunctionToolIn | HostedToolIn] = []
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | HostedToolChoice | None = None
    parallel_tool_calls: bool = True
    text: TextConfigIn | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16)
    store: bool = True
    previous_response_id: str | None = Field(None, max_length=128)
    truncation: Literal["auto", "disabled"] = "disabled"
    include: list[Literal[INCLUDABLE]] | None = None  # type: ignore[valid-type]
    stream: bool = False
    background: bool | None = None
    user: str | None = None
    # -- lampstand extensions (as in chat completions) --
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    logit_bias: dict[str, float] | None = None
    keep_alive: str | float | None = Field(None, description="how long the model stays loaded after this request")
    lora_scale: float | None = Field(None, ge=-16.0, le=16.0,
                                     description="scale of the LoRA adapter `model` names (default: its load scale)")


# -- response objects ----------------------------------------------------------------------

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputText(Response):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []


class OutputMessage(Response):
    id: str
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class FunctionCallItem(Response):
    id: str
    type: Literal["function_call"] = "function_call"
    status: ItemStatus
    call_id: str
    name: str
    arguments: str


class InputTextOut(Response):
    type: Literal["input_text"] = "input_text"
    text: str


class InputImageOut(Response):
    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] = "auto"


class InputMessageItem(Response):
    """A stored input message (`GET /v1/responses/{id}/input_items`)."""

    id: str
    type: Literal["message"] = "message"
    status: ItemStatus = "completed"
    role: Literal["user", "assistant", "system", "developer"]
    content: list[InputTextOut | InputImageOut | OutputText]


class FunctionCallOutputItem(Response):
    id: str
    type: Literal["function_call_output"] = "function_call_output"
    status: ItemStatus = "completed"
    call_id: str
    output: str


class FileSearchResult(Response):
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any] = {}


class FileSearchCallItem(Response):
    """The server's search: its queries and, with `include: ["file_search_call.results"]`, what it found."""

    id: str
    type: Literal["file_search_call"] = "file_search_call"
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"]
    queries: list[str]
    results: list[FileSearchResult] | None = None


OutputItem = Annotated[OutputMessage | FunctionCallItem | FileSearchCallItem, Field(discriminator="type")]
StoredInputItem = Annotated[InputMessageItem | FunctionCallItem | FunctionCallOutputItem | FileSearchCallItem,
                            Field(discriminator="type")]


class InputTokensDetails(Response):
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # lampstand's caches are written as a side effect: never billed apart


class OutputTokensDetails(Response):
    reasoning_tokens: int = 0


class ResponseUsage(Response):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseErrorOut(Response):
    code: str
    message: str


class IncompleteDetails(Response):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(Response):
    """A response; the optional fields are always sent, `null` until known."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    background: bool = False
    error: ResponseErrorOut | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = []
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = {"format": {"type": "text"}}
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = []
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = {}


class ResponseDeleted(Response):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(Response):
    object: Literal["list"] = "list"
    data: list[StoredInputItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


# -- stream events -----------------------------------------------------------------------
# `sequence_number` is the last field of each, so a frame can be rendered once and numbered.

class ResponseLifecycleEvent(Response):
    type: Literal["response.created", "response.in_progress", "response.completed", "response.incomplete",
                  "response.failed"]
    response: ResponseObject
    sequence_number: int


class OutputItemEvent(Response):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem
    sequence_number: int


class ContentPartEvent(Response):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: OutputText
    sequence_number: int


class OutputTextDeltaEvent(Response):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]] = []
    sequence_number: int


class OutputTextDoneEvent(Response):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]] = []
    sequence_number: int


class FunctionCallArgumentsDeltaEvent(Response):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    item_id: str
    output_index: int
    delta: str
    sequence_number: int


class FunctionCallArgumentsDoneEvent(Response):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    name: str
    arguments: str
    sequence_number: int


class ErrorEvent(Response):
    """An error after the stream started; `response.failed` follows it."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None
    sequence_number: int


class FileSearchCallEvent(Response):
    type: Literal["response.file_search_call.in_progress", "response.file_search_call.searching",
                  "response.file_search_call.completed"]
    item_id: str
    output_index: int
    sequence_number: int


class AnnotationAddedEvent(Response):
    type: Literal["response.output_text.annotation.added"] = "response.output_text.annotation.added"
    item_id: str
    output_index: int
    content_index: int
    annotation_index: int
    annotation: dict[str, Any]
    sequence_number: int


STREAM_EVENTS = (ResponseLifecycleEvent, OutputItemEvent, ContentPartEvent, OutputTextDeltaEvent,
                 OutputTextDoneEvent, FunctionCallArgumentsDeltaEvent, FunctionCallArgumentsDoneEvent, ErrorEvent,
                 FileSearchCallEvent, AnnotationAddedEvent)
