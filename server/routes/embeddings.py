"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import protocol as p
from ..serving.embeddings import create_embeddings
from .deps import ServerState, get_state
from .responses import json_or_stream

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=p.EmbeddingResponse)
async def embeddings(body: p.EmbeddingRequest, state: Annotated[ServerState, Depends(get_state)]) -> Response:
    """Vectors for a string, strings, token ids or lists of token ids."""
    return json_or_stream(await create_embeddings(state.pool, state.batchers, state.settings.server, body))
