"""POST /v1/rerank (also /rerank and /v1/reranking, the paths other local servers answer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.rerank import create_rerank
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["rerank"])


@router.post("/v1/rerank", response_model=p.RerankResponse, responses=ERROR_RESPONSES)
@router.post("/rerank", response_model=p.RerankResponse, responses=ERROR_RESPONSES, include_in_schema=False)
@router.post("/v1/reranking", response_model=p.RerankResponse, responses=ERROR_RESPONSES, include_in_schema=False)
async def rerank(body: p.RerankRequest, state: Annotated[ServerState, Depends(get_state)],
                 request: Request) -> Response:
    """The documents ordered by their relevance to the query, scored by a cross-encoder."""
    return await answer(request, create_rerank(state.pool, state.settings.server, body))
