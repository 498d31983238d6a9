"""Turns a `ChatRequest` into the text a chat template renders, tools included.

A template that renders `tools` itself gets them; for one that does not, the tools are
offered in the system message, earlier calls are written back as `<tool_call>` blocks and
tool results as user turns. Engine-free; any text backend with a Jinja template uses it.
"""

from __future__ import annotations

from typing import Any

from .chat_template import ChatTemplate, message_to_dict, tool_to_dict
from .tool_calls import calls_as_text, tool_instructions
from .types import ChatMessage, ChatRequest

__all__ = ["render_chat"]


def _fallback_message(message: ChatMessage) -> dict[str, Any]:
    """A message rewritten for a template that knows nothing of tools."""
    if message.role == "assistant" and message.tool_calls:
        return {"role": "assistant", "content": (message.content or "") + calls_as_text(message)}
    if message.role == "tool":
        return {"role": "user", "content": f"<tool_response>{message.content or ''}</tool_response>"}
    return message_to_dict(message)


def render_chat(template: ChatTemplate, request: ChatRequest) -> str:
    """The prompt for `request`, ending with the assistant's generation prompt."""
    offer_tools = bool(request.tools) and request.tool_choice.mode != "none"
    if template.handles_tools:
        messages = [message_to_dict(m) for m in request.messages]
        tools = [tool_to_dict(t) for t in request.tools] if offer_tools else None
        return template.render(messages, tools=tools)
    messages = [_fallback_message(m) for m in request.messages]
    if offer_tools:
        instructions = tool_instructions(request.tools)
        if messages and messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + instructions}
        else:
            messages.insert(0, {"role": "system", "content": instructions})
    return template.render(messages)
