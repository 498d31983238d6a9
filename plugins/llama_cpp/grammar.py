"""Constrains generation with a GBNF grammar: JSON mode, JSON schema and forced tool calls.

The grammar comes from llama.cpp's own JSON-schema converter, so output always parses and
validates. A schema the converter cannot handle, or one past `schema_limits`' bounds (which
would crash or stall the worker), is the client's 400.
"""

from __future__ import annotations

import json
from typing import Any

from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.tool_calls import forced_call_schema, is_forced_tool_call
from lampstand.plugins.types import ChatRequest

from .schema_limits import check_schema_limits

__all__ = ["grammar_for_chat", "grammar_from_schema"]

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def grammar_from_schema(schema: dict[str, Any], prop_order: list[str] | None = None, *,
                        param: str = "response_format") -> Any:
    """A `LlamaGrammar` accepting exactly the JSON documents valid against `schema`."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    check_schema_limits(schema, param)
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema), prop_order=prop_order)
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise InvalidRequest(f"cannot constrain output to this JSON schema: {exc}", param=param) from exc
    return LlamaGrammar.from_string(gbnf, verbose=False)


def grammar_for_chat(request: ChatRequest) -> Any | None:
    """The grammar a chat request needs, or None for free text."""
    if is_forced_tool_call(request):
        schema = forced_call_schema(request.tools, request.tool_choice)
        return grammar_from_schema(schema, ["name", "arguments"], param="tools")
    fmt = request.response_format
    if fmt.kind == "json_object":
        return grammar_from_schema(ANY_OBJECT)
    if fmt.kind == "json_schema":
        return grammar_from_schema(fmt.schema or ANY_OBJECT)
    return None
