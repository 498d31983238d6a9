"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.embeddings import create_embeddings
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=p.EmbeddingResponse, responses=ERROR_RESPONSES)
async def embeddings(body: p.EmbeddingRequest, state: Annotated[ServerState, Depends(get_state)],
                     request: Request) -> Response:
    """Vectors for a string, strings, token ids or lists of token ids."""
    return await answer(request, create_embeddings(state.pool, state.batchers, state.settings.server, body))
