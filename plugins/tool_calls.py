"""Tool calling on models whose output is plain text: how tools are offered and how calls are read.

Two output shapes are understood. A forced call (`tool_choice` required or a named function)
is constrained by the engine to exactly one JSON object `{"name": ..., "arguments": {...}}`;
a free answer may contain `<tool_call>{...}</tool_call>` blocks, the convention of the Hermes
and Qwen chat templates. `ToolCallParser` turns a stream of text into text and call deltas.
Engine-free.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from .types import ChatMessage, ChatRequest, FunctionTool, GenerationChunk, ToolCallDelta, ToolChoice

__all__ = ["forced_call_schema", "tool_instructions", "calls_as_text", "is_forced_tool_call", "call_parser_for",
           "ToolCallParser", "with_tool_calls"]

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


def is_forced_tool_call(request: ChatRequest) -> bool:
    """Whether `tool_choice` obliges the model to call a tool."""
    return bool(request.tools) and request.tool_choice.mode in ("required", "function")


def forced_call_schema(tools: tuple[FunctionTool, ...], choice: ToolChoice) -> dict[str, Any]:
    """JSON schema of the one call a forced `tool_choice` allows."""
    allowed = [t for t in tools if choice.mode != "function" or t.name == choice.name]
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in allowed
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def tool_instructions(tools: tuple[FunctionTool, ...]) -> str:
    """System text that offers the tools to a model whose template cannot."""
    listing = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
        for t in tools
    )
    return (
        "You may call these functions:\n" + listing + "\n"
        "To call one, answer with " + OPEN_TAG
        + '{"name": <function name>, "arguments": <arguments object>}' + CLOSE_TAG + "."
    )


def calls_as_text(message: ChatMessage) -> str:
    """An assistant turn's earlier tool calls written the way the model is asked to write them."""
    return "".join(
        OPEN_TAG + json.dumps({"name": c.name, "arguments": json.loads(c.arguments or "{}")}) + CLOSE_TAG
        for c in message.tool_calls
    )


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _parse_call(text: str) -> tuple[str, str] | None:
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    return call["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


class ToolCallParser:
    """Splits generated text into plain text and tool calls, chunk by chunk.

    `forced=True`: the whole output is one call object. Otherwise text passes through
    except inside `<tool_call>` blocks; text that may be the start of a tag is held back.
    """

    def __init__(self, *, forced: bool, max_calls: int | None = None) -> None:
        self.forced = forced
        self.max_calls = max_calls  # calls beyond it are dropped (parallel_tool_calls: false is 1)
        self.buffer = ""
        self.in_call = forced
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Text to emit now and completed calls."""
        self.buffer += text
        out, deltas = "", []
        while True:
            if self.in_call:
                if self.forced or CLOSE_TAG not in self.buffer:
                    return out, deltas
                body, self.buffer = self.buffer.split(CLOSE_TAG, 1)
                deltas += self._call_deltas(body)
                self.in_call = False
                continue
            if OPEN_TAG in self.buffer:
                before, self.buffer = self.buffer.split(OPEN_TAG, 1)
                out += before
                self.in_call = True
                continue
            keep = _partial_tag_length(self.buffer)
            out += self.buffer[: len(self.buffer) - keep]
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return out, deltas

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """Flush at the end of generation; an unclosed call block is parsed as it stands."""
        rest, self.buffer = self.buffer, ""
        if self.in_call:
            deltas = self._call_deltas(rest)
            return ("" if deltas else rest), deltas
        return rest, []

    def _call_deltas(self, body: str) -> list[ToolCallDelta]:
        parsed = _parse_call(body.strip())
        if parsed is None or (self.max_calls is not None and self.calls >= self.max_calls):
            return []
        name, arguments = parsed
        index, self.calls = self.calls, self.calls + 1
        return [
            ToolCallDelta(index=index, id=_new_call_id(), name=name, arguments=""),
            ToolCallDelta(index=index, arguments=arguments),
        ]


def call_parser_for(request: ChatRequest) -> ToolCallParser:
    """The parser of a chat request's answer: one forced call, or free text with at most one call
    block read as a call when the request turned `parallel_tool_calls` off."""
    return ToolCallParser(forced=is_forced_tool_call(request), max_calls=None if request.parallel_tool_calls else 1)


def _partial_tag_length(text: str) -> int:
    """Length of the longest suffix of `text` that could begin `<tool_call>`."""
    for size in range(min(len(OPEN_TAG) - 1, len(text)), 0, -1):
        if OPEN_TAG.startswith(text[-size:]):
            return size
    return 0


def with_tool_calls(chunks: Iterable[GenerationChunk], parser: ToolCallParser) -> Iterator[GenerationChunk]:
    """Re-chunk a generation stream so tool calls come out as `tool_calls` deltas."""
    made_calls = False
    for chunk in chunks:
        text, deltas = parser.feed(chunk.text)
        if chunk.finish_reason is not None:
            tail, more = parser.finish()
            text, deltas = text + tail, deltas + more
        made_calls = made_calls or bool(deltas)
        finish = chunk.finish_reason
        if finish is not None and made_calls:
            finish = "tool_calls"
        if text or deltas or finish is not None or chunk.logprobs:
            yield GenerationChunk(text=text, logprobs=chunk.logprobs, tool_calls=tuple(deltas),
                                  finish_reason=finish, usage=chunk.usage)
