"""Protocol requests to plugin requests: validation the schema alone cannot express.

Limits come from `ServerSettings`; every refusal is an `InvalidRequest` naming the param.
This module never touches an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from lampstand.plugins.errors import CapabilityMissing, InvalidRequest, UnsupportedParameter
from lampstand.plugins.types import (
    ChatMessage,
    ImageInput,
    ChatRequest,
    FunctionTool,
    ResponseFormat,
    SamplingParams,
    ToolCall,
    ToolChoice,
)

from .. import protocol as p
from ..config import ServerSettings

__all__ = ["sampling_params", "chat_request", "refuse_hosted_tools", "stop_list", "seeded"]


def stop_list(stop: str | list[str] | None, settings: ServerSettings) -> tuple[str, ...]:
    """The stop strings, at most `max_stop` of them."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > settings.max_stop:
        raise InvalidRequest(f"at most {settings.max_stop} stop sequences are allowed", param="stop")
    return tuple(stops)


MAX_LOGIT_BIAS = 300


def _logit_bias(given: dict[str, float]) -> tuple[tuple[int, float], ...]:
    """OpenAI's `{"token id": bias}` with ids as strings and biases in [-100, 100]."""
    if len(given) > MAX_LOGIT_BIAS:
        raise InvalidRequest(f"logit_bias may name at most {MAX_LOGIT_BIAS} tokens", param="logit_bias")
    out = []
    for key, value in given.items():
        if not key.isdigit() or len(key) > 9:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key[:20]!r}", param="logit_bias")
        if not -100 <= value <= 100:
            raise InvalidRequest("logit_bias values must be between -100 and 100", param="logit_bias")
        out.append((int(key), float(value)))
    return tuple(out)


def sampling_params(body: p.SamplingFields, settings: ServerSettings, *, max_tokens: int | None,
                    logprobs: bool, top_logprobs: int) -> SamplingParams:
    """Sampling settings with the server-side cap applied when the request names none."""
    if body.n > settings.max_n:
        raise InvalidRequest(f"n must be at most {settings.max_n}", param="n")
    bias = _logit_bias(body.logit_bias or {})
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequest(f"max_tokens must be at most {settings.max_tokens_limit}", param="max_tokens")
    return SamplingParams(
        max_tokens=max_tokens or settings.default_max_tokens,
        max_tokens_explicit=max_tokens is not None,
        logit_bias=bias,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=None if body.seed is None else body.seed % 2**32,
        stop=stop_list(body.stop, settings),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        top_k=body.top_k,
        min_p=body.min_p,
        repeat_penalty=body.repeat_penalty,
    )


def seeded(sampling: SamplingParams, choice: int) -> SamplingParams:
    """The sampling params of choice `choice` of n: distinct but reproducible seeds."""
    if choice == 0 or sampling.seed is None:
        return sampling
    return replace(sampling, seed=(sampling.seed + choice) % 2**32)


def _text_of(message: p.ChatMessageIn, index: int, vision: bool) -> str | None:
    if message.content is None or isinstance(message.content, str):
        return message.content
    if any(isinstance(part, p.ImagePart) for part in message.content) and not vision:
        raise CapabilityMissing("this model has no vision capability; send text only",
                                param=f"messages[{index}].content")
    return "".join(part.text for part in message.content if isinstance(part, p.TextPart))


def _message(message: p.ChatMessageIn, index: int, vision: bool, images: tuple[ImageInput, ...]) -> ChatMessage:
    role = "system" if message.role == "developer" else message.role
    calls = tuple(ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                  for c in message.tool_calls or ())
    if role == "tool" and not message.tool_call_id:
        raise InvalidRequest("tool messages need tool_call_id", param=f"messages[{index}].tool_call_id")
    return ChatMessage(role=role, content=_text_of(message, index, vision), name=message.name,
                       tool_calls=calls, tool_call_id=message.tool_call_id, images=images)


def refuse_hosted_tools(tools: Sequence[object], served: Sequence[str] = ()) -> None:
    """400 for a server-side tool (`web_search`, ...) other than those in `served`, which the
    server runs itself (`file_search`: serving/file_search.py takes it out before the chat starts)."""
    for index, tool in enumerate(tools):
        if isinstance(tool, p.HostedToolIn) and tool.type not in served:
            raise UnsupportedParameter(f"the tool type '{tool.type}' is not supported by this server; send "
                                       "function tools or file_search", param=f"tools[{index}].type")


def _function_tools(tools: Sequence[p.ToolDefinition | p.HostedToolIn]) -> list[p.ToolDefinition]:
    refuse_hosted_tools(tools)
    return [tool for tool in tools if isinstance(tool, p.ToolDefinition)]


def _tool_choice(body: p.ChatCompletionRequest, tools: tuple[FunctionTool, ...]) -> ToolChoice:
    choice = body.tool_choice
    if isinstance(choice, p.NamedToolChoice):
        if choice.function.name not in {t.name for t in tools}:
            raise InvalidRequest(f"tool_choice names {choice.function.name!r}, which is not in tools",
                                 param="tool_choice")
        return ToolChoice("function", choice.function.name)
    if choice in ("required",) and not tools:
        raise InvalidRequest("tool_choice 'required' needs tools", param="tool_choice")
    return ToolChoice(choice or ("auto" if tools else "none"))


def _response_format(body: p.ChatCompletionRequest) -> ResponseFormat:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return ResponseFormat()
    if fmt.type == "json_object":
        return ResponseFormat("json_object")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequest("response_format json_schema needs json_schema.schema",
                             param="response_format.json_schema")
    return ResponseFormat("json_schema", fmt.json_schema.schema_)


def chat_request(body: p.ChatCompletionRequest, settings: ServerSettings, *, vision: bool,
                 images: Mapping[int, tuple[ImageInput, ...]] | None = None) -> ChatRequest:
    """The plugin-level chat request for one choice.

    `images` are the messages' images already read and checked (serving/image_inputs.py), by
    message index; image parts reach only a model with `vision`, any other gets a 400.
    """
    if body.top_logprobs and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    tools = tuple(
        FunctionTool(name=t.function.name, description=t.function.description or "",
                     parameters=t.function.parameters or {"type": "object", "properties": {}})
        for t in _function_tools(body.tools or ())
    )
    return ChatRequest(
        messages=tuple(_message(m, i, vision, (images or {}).get(i, ())) for i, m in enumerate(body.messages)),
        sampling=sampling_params(body, settings, max_tokens=body.max_completion_tokens or body.max_tokens,
                                 logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0),
        tools=tools,
        tool_choice=_tool_choice(body, tools),
        response_format=_response_format(body),
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )
