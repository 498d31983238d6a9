"""Renders a model's own Jinja chat template into a prompt, the way transformers does.

Templates come from model files, so they are untrusted: they render in a sandbox with time
and size limits (`template_sandbox`). A template error or a broken limit is the caller's
400 (`InvalidRequest`). Engine-free.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

from .errors import InvalidRequest
from .template_sandbox import MAX_PROMPT_CHARS, MAX_RENDER_SECONDS, LimitExceeded, render_within_limits
from .types import ChatMessage, FunctionTool

__all__ = ["ChatTemplate", "MAX_PROMPT_CHARS", "MAX_RENDER_SECONDS"]


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
    """One model's chat template plus its special tokens and rendering limits."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 max_render_seconds: float = MAX_RENDER_SECONDS,
                 max_prompt_chars: int = MAX_PROMPT_CHARS) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.max_render_seconds = max_render_seconds
        self.max_prompt_chars = max_prompt_chars

    @property
    def handles_tools(self) -> bool:
        """Whether the template renders `tools` and `tool_calls` itself."""
        return "tools" in self.source and "tool_calls" in self.source

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt text; a template error or a broken limit is the caller's 400, never a crash."""
        try:
            return render_within_limits(self.source, {
                "messages": messages,
                "tools": tools or None,
                "add_generation_prompt": add_generation_prompt,
                "bos_token": self.bos_token,
                "eos_token": self.eos_token,
            }, max_render_seconds=self.max_render_seconds, max_prompt_chars=self.max_prompt_chars)
        except LimitExceeded as exc:
            raise InvalidRequest(str(exc), param="messages") from exc
        except (TemplateError, TypeError, ValueError, LookupError, ArithmeticError, RecursionError) as exc:
            raise InvalidRequest(f"the model's chat template rejected these messages: {exc}",
                                 param="messages") from exc
