"""POST /v1/rag/query: an answer from an index's chunks, with numbered citations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .. import protocol as p
from ..serving.rag import answer_query
from .deps import ServerState, get_state
from .responses import ERROR_RESPONSES, answer

router = APIRouter(tags=["rag"])


@router.post("/v1/rag/query", response_model=p.RagAnswer, responses=ERROR_RESPONSES)
async def rag_query(body: p.RagQueryRequest, state: Annotated[ServerState, Depends(get_state)],
                    request: Request) -> Response:
    """Retrieve, then let the chat model answer from the quoted sources (streamed with `stream`)."""
    return await answer(request, answer_query(state, body))
