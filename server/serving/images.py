"""Serving /v1/images/generations: an OpenAI images request to a diffusion model's images.

The request's fields are checked against `[images]` limits and its style LoRAs confined to
`[images] lora_dir` before it joins the model's queue. The worker yields a progress item per
denoising step (logged and counted in metrics) and a PNG per image. When the client goes
away the route cancels this work, which closes the worker's stream: the pipeline stops at its
next step.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import AsyncIterator

from lampstand.plugins.contract import GENERATE_IMAGES, Capability
from lampstand.plugins.errors import InvalidRequest, PathNotAllowed
from lampstand.plugins.paths import confine
from lampstand.plugins.types import GeneratedImage, ImageGenerationRequest, ImageProgress, StyleLora

from .. import protocol as p
from ..config import ImageSettings
from ..leases import Lease
from ..model_pool import ModelPool
from .generation import admitted, now, sse_frames
from .image_outputs import ImageOutputs

__all__ = ["ImageService"]

log = logging.getLogger(__name__)
Item = ImageProgress | GeneratedImage


class ImageService:
    """Image generation under one `[images]` configuration, and the URLs of its results."""

    def __init__(self, settings: ImageSettings, pool: ModelPool) -> None:
        self.settings, self.pool = settings, pool
        self.outputs = ImageOutputs(settings.output_dir, settings.url_ttl)

    async def generate(self, body: p.ImageGenerationRequest, base_url: str
                       ) -> p.ImagesResponse | AsyncIterator[str]:
        """The images, as base64 PNGs or as URLs under `base_url` that live `url_ttl` seconds;
        with `stream`, SSE frames of progress events and each finished image."""
        hosted = self.pool.pick(body.model, Capability.IMAGE_GENERATION, "image generation")
        request = self.plugin_request(body)
        if body.stream and body.response_format == "url":
            raise InvalidRequest('a streamed generation sends b64_json images; response_format "url" '
                                 "cannot be streamed", param="response_format")
        items = await admitted(self.pool, hosted, None, lambda lease: _generate(lease, request))
        if body.stream:
            return sse_frames(_events(items))
        images = [item async for item in items if isinstance(item, GeneratedImage)]
        images.sort(key=lambda image: image.index)
        if (body.response_format or "b64_json") == "url":
            names = await asyncio.to_thread(self.outputs.save, [image.png for image in images])
            data = [p.ImageOut(url=f"{base_url}v1/images/files/{name}", seed=image.seed)
                    for name, image in zip(names, images)]
        else:
            data = [p.ImageOut(b64_json=base64.b64encode(image.png).decode("ascii"), seed=image.seed)
                    for image in images]
        size = f"{images[0].width}x{images[0].height}" if images else None
        return p.ImagesResponse(created=now(), data=data, size=size, output_format="png")

    def plugin_request(self, body: p.ImageGenerationRequest) -> ImageGenerationRequest:
        """The plugin-level request; 400 for anything outside the configured limits."""
        limits = self.settings
        if body.n > limits.max_n:
            raise InvalidRequest(f"n must be at most {limits.max_n}", param="n")
        for name, text in (("prompt", body.prompt), ("negative_prompt", body.negative_prompt or "")):
            if len(text) > limits.max_prompt_chars:
                raise InvalidRequest(f"{name} must be at most {limits.max_prompt_chars} characters", param=name)
        if body.steps is not None and body.steps > limits.max_steps:
            raise InvalidRequest(f"steps must be at most {limits.max_steps}", param="steps")
        width, height = self._size(body.size)
        return ImageGenerationRequest(
            prompt=body.prompt, width=width, height=height, n=body.n,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**32),
            negative_prompt=body.negative_prompt or None, steps=body.steps, guidance_scale=body.guidance_scale,
            loras=tuple(self._lora(item, i) for i, item in enumerate(body.lora)))

    def _size(self, size: str | None) -> tuple[int | None, int | None]:
        if size is None or size == "auto":
            return None, None
        width, x, height = size.lower().partition("x")
        if not (x and width.isdigit() and height.isdigit() and len(width) <= 5 and len(height) <= 5):
            raise InvalidRequest('size must be "WIDTHxHEIGHT" (for example "512x512") or "auto"', param="size")
        w, h = int(width), int(height)
        side = self.settings.max_side
        if not (64 <= w <= side and 64 <= h <= side) or w % 8 or h % 8:
            raise InvalidRequest(f"width and height must be multiples of 8 between 64 and {side}", param="size")
        return w, h

    def _lora(self, item: p.StyleLoraIn | str, index: int) -> StyleLora:
        lora = p.StyleLoraIn(name=item) if isinstance(item, str) else item
        param = f"lora[{index}]"
        if not lora.name.endswith(".safetensors"):
            raise InvalidRequest("a style LoRA must be a .safetensors file", param=param)
        try:
            path = confine(lora.name, [self.settings.lora_dir], what="image LoRA dir")
        except PathNotAllowed as exc:
            raise InvalidRequest(exc.message, param=param) from None
        return StyleLora(path=str(path), scale=lora.scale)


async def _events(items: AsyncIterator[Item]) -> AsyncIterator[str]:
    async for item in items:
        if isinstance(item, ImageProgress):
            yield p.ImageGenerationProgress(image_index=item.index, step=item.step, steps=item.steps).to_json()
        else:
            yield p.ImageGenerationCompleted(
                b64_json=base64.b64encode(item.png).decode("ascii"), created_at=now(),
                size=f"{item.width}x{item.height}", image_index=item.index, seed=item.seed).to_json()


async def _generate(lease: Lease, request: ImageGenerationRequest) -> AsyncIterator[Item]:
    """The worker's items; each step is logged and counted, an early close counted as cancelled."""
    metrics, model = lease.metrics, lease.model_id
    steps_done, step_seconds = metrics.image_steps.labels(model), metrics.image_step_seconds.labels(model)
    last = time.monotonic()
    try:
        async with lease:
            async for item in lease.stream(GENERATE_IMAGES, request):
                if isinstance(item, ImageProgress):
                    moment = time.monotonic()
                    steps_done.inc()
                    step_seconds.observe(moment - last)
                    last = moment
                    log.info("image progress", extra={"model": model, "image": item.index + 1, "of": request.n,
                                                      "step": item.step, "steps": item.steps})
                else:
                    metrics.images_generated.labels(model).inc()
                yield item
    except (asyncio.CancelledError, GeneratorExit):  # the client went away (or the stream was closed)
        metrics.image_generations_cancelled.labels(model).inc()
        log.info("image generation cancelled", extra={"model": model})
        raise
