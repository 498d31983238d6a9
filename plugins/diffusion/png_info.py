"""A finished image as PNG bytes whose text chunks say how to make it again.

Two text chunks (tEXt, or iTXt for text beyond Latin-1): `parameters`, in the layout
AUTOMATIC1111's web UI writes (and image sites and ComfyUI read), and `lampstand`, the same
facts as JSON. LoRAs appear in the A1111 prompt as `<lora:name:scale>` tags, its convention;
only file names are recorded, never server paths.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ImageRecipe", "encode_png", "read_recipe"]

JSON_KEY = "lampstand"
A1111_KEY = "parameters"


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that decided one image."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int
    scheduler: str
    model: str
    loras: tuple[tuple[str, float], ...] = ()  # (file name, scale)

    def a1111(self) -> str:
        """The `parameters` text: prompt, negative prompt, then one line of settings."""
        tags = "".join(f" <lora:{Path(name).stem}:{scale:g}>" for name, scale in self.loras)
        lines = [self.prompt + tags]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(f"Steps: {self.steps}, Sampler: {self.scheduler}, CFG scale: {self.guidance_scale:g}, "
                     f"Seed: {self.seed}, Size: {self.width}x{self.height}, Model: {self.model}")
        return "\n".join(lines)

    def as_json(self) -> str:
        fields = asdict(self)
        fields["loras"] = [{"name": name, "scale": scale} for name, scale in self.loras]
        return json.dumps(fields, ensure_ascii=False, sort_keys=True)


def encode_png(image: Any, recipe: ImageRecipe) -> bytes:
    """`image` (a PIL image) as PNG bytes carrying `recipe`; the same inputs give the same bytes."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, recipe.a1111())
    info.add_text(JSON_KEY, recipe.as_json())
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def read_recipe(png: bytes) -> dict[str, Any]:
    """The JSON recipe of a PNG this module wrote (for tests and tools)."""
    from PIL import PngImagePlugin

    with PngImagePlugin.PngImageFile(io.BytesIO(png)) as image:
        return dict(json.loads(image.text[JSON_KEY]))
