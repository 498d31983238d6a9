"""POST /v1/images/generations, and GET /v1/images/files/{name} for `response_format: "url"`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from lampstand.plugins.errors import NotFound

from .. import protocol as p
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["images"])


@router.post("/v1/images/generations", response_model=p.ImagesResponse, responses=ERROR_RESPONSES)
async def generate_images(body: p.ImageGenerationRequest, state: Annotated[ServerState, Depends(get_state)],
                          request: Request) -> Response:
    """Text to images with a diffusion model; cancelled if the client disconnects."""
    return await answer(request, state.image_generation.generate(body, str(request.base_url)))


@router.get("/v1/images/files/{name}", responses={200: {"content": {"image/png": {}}}, **ERROR_RESPONSES})
async def image_file(name: str, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """A generated image, while its URL lives (`[images] url_ttl`)."""
    path = state.image_generation.outputs.find(name)
    if path is None:
        raise NotFound(f"no image {name[:64]!r}: it expired or never existed", param="name")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})
