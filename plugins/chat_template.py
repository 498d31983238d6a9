"""Renders a model's own Jinja chat template into a prompt, the way transformers does.

Templates come from model files, so they are untrusted: rendering happens in Jinja's
immutable sandbox, with the same globals and filters as `apply_chat_template`
(`raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII). Engine-free.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequest
from .types import ChatMessage, FunctionTool

__all__ = ["ChatTemplate"]


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(source: str):  # type: ignore[no-untyped-def]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def message_to_dict(message: ChatMessage) -> dict[str, Any]:
    """A message in the dict shape chat templates are written against."""
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_to_dict(tool: FunctionTool) -> dict[str, Any]:
    """A tool in OpenAI's `{"type": "function", "function": ...}` shape."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


class ChatTemplate:
    """One model's chat template plus its special tokens."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @property
    def handles_tools(self) -> bool:
        """Whether the template renders `tools` and `tool_calls` itself."""
        return "tools" in self.source and "tool_calls" in self.source

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt text; a template error is the caller's 400, never a crash."""
        try:
            template = _compile(self.source)
            return template.render(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except (TemplateError, TypeError, ValueError, KeyError) as exc:
            raise InvalidRequest(f"the model's chat template rejected these messages: {exc}",
                                 param="messages") from exc
