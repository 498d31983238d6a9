"""A chat request as a LLaVA prompt: the processor's template rendered in our sandbox, and the
images opened in the order their `<image>` placeholders appear.

Each message becomes content parts the way transformers' processors take them: one
`{"type": "image"}` per image, then `{"type": "text"}`. The template comes from the model
folder, so it renders through `ChatTemplate` (time and size limits) rather than transformers'
unbounded `apply_chat_template`. Pillow is the only engine this module touches.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lampstand.plugins.chat_template import ChatTemplate, message_to_dict
from lampstand.plugins.errors import InvalidRequest
from lampstand.plugins.image_files import open_image
from lampstand.plugins.types import ChatMessage, ChatRequest, ImageInput

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["VisionPrompt", "sandboxed_source"]

# `{% generation %}` marks the assistant's text for training masks (transformers' own Jinja
# extension); it renders its body unchanged, which `{% if true %}` does in any sandbox.
_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


def sandboxed_source(source: str) -> str:
    """`source` with transformers' `generation` blocks turned into plain Jinja."""
    return _GENERATION_TAG.sub(lambda m: "{%" + m[1] + (" endif " if m[2] else " if true ") + m[3] + "%}", source)


def _parts_message(message: ChatMessage) -> dict[str, Any]:
    """The message with its content as parts: its images first, then its text."""
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in message.images]
    if message.content or not message.images:
        parts.append({"type": "text", "text": message.content or ""})
    return {**message_to_dict(message), "content": parts}


class VisionPrompt:
    """One model's template, image token and image size limit."""

    def __init__(self, template: ChatTemplate, image_token: str, max_image_side: int | None) -> None:
        self.template = template
        self.image_token = image_token
        self.max_image_side = max_image_side

    def render(self, request: ChatRequest) -> tuple[str, list[Image]]:
        """The prompt text and its images, one `image_token` in the text per image."""
        text = self.template.render([_parts_message(m) for m in request.messages])
        images = [self._opened(image) for m in request.messages for image in m.images]
        placed = text.count(self.image_token)
        if placed != len(images):
            raise InvalidRequest(
                f"the prompt has {placed} image placeholders ({self.image_token!r}) for {len(images)} images; "
                "the chat template must place one per image and the text may not contain the placeholder",
                param="messages")
        return text, images

    def _opened(self, image: ImageInput) -> Image:
        pixels = open_image(image)  # a 400 for bytes that are not a whole image
        if self.max_image_side and max(pixels.size) > self.max_image_side:
            pixels.thumbnail((self.max_image_side, self.max_image_side))  # keeps the aspect ratio
        return pixels
